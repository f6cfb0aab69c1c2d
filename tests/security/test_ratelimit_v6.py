"""Issue 11, item 11 (ingest half): per-IP limits key IPv6 by its /64; preflight walks up any number of labels."""

from __future__ import annotations

import ipaddress

from collector.ingest.origins import candidates
from collector.ingest.ratelimit import address_key
from tests.conftest import MakeApp

EVENT = {"eventType": "pageview", "siteId": "acme.com"}


def test_ipv6_addresses_of_one_network_share_a_key() -> None:
    """Addresses in one /64 map to one key, other /64s and IPv4 (also IPv4-mapped) to their own."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"


async def test_rotating_through_a_64_does_not_escape_the_ip_rate_limit(make_app: MakeApp) -> None:
    """A sender rotating addresses inside its /64 meets one bucket (429); a neighbour /64 keeps its own."""
    running = await make_app(
        client_host="127.0.0.1", trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        rate_limit_ip_per_s=0.01, rate_limit_ip_burst=3,
    )  # fmt: skip
    statuses = [
        (await running.post(EVENT, headers={"x-forwarded-for": f"2001:db8:1:2::{n:x}"})).status_code
        for n in range(1, 11)
    ]
    assert statuses == [200] * 3 + [429] * 7, statuses
    assert running.services.ingest.rejected["rate_limited"] == 7
    other = await running.post(EVENT, headers={"x-forwarded-for": "2001:db8:1:3::1"})
    assert other.status_code == 200


async def test_preflight_from_a_page_many_labels_below_the_site_is_allowed(make_app: MakeApp) -> None:
    """A page seven labels below the authorized acme.com gets its CORS preflight allowed (refused at 4 before)."""
    running = await make_app()
    origin = "https://a.b.c.d.e.f.shop.acme.com"
    response = await running.client.options(
        "/collect", headers={"origin": origin, "access-control-request-method": "POST"}
    )
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == origin


def test_preflight_candidates_are_bounded_by_host_name_syntax() -> None:
    """The longest valid host name (127 labels) yields at most 126 candidates, never more."""
    host = ".".join(["a"] * 126 + ["b"])
    assert len(host) == 253
    assert len(candidates(host)) == 126
