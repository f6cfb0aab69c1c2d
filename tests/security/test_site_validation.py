"""Issue 11, items 1 and 2: a siteId or Origin host that is not a host name is refused before it becomes a key."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from collector.ingest import origins, sites
from collector.ingest.origins import host_of
from collector.ingest.sites import normalize_domain
from tests.conftest import MakeApp, Running
from tests.pixel_management import PixelManagement, site_config

JUNK_SITE_IDS = [
    "[::1%\r\nINFO forged line \x1b[31m]",  # an IPv6 zone id: the ipaddress module takes any text after the %
    "[fe80::1%eth0]",
    "fe80::1%25" + "x" * 300,
    "a" * 64 + ".com",  # a label over 63 bytes
    ".".join(["abcdefghi"] * 26),  # 259 bytes in all
    "x" * 1_000_000,
    "shop.acme.com\nINFO forged",
    "shop acme.com",
    "-shop.acme.com",
]


@pytest.mark.parametrize("site_id", JUNK_SITE_IDS, ids=range(len(JUNK_SITE_IDS)))
async def test_junk_site_id_is_refused_as_invalid_site_before_any_lookup_or_log(
    running: Running, pixel: PixelManagement, caplog: pytest.LogCaptureFixture, site_id: str
) -> None:
    """A siteId that is no host name answers 422 invalid_site, counted, with no directory lookup and no log line."""
    caplog.set_level(logging.DEBUG)
    lookups = sum(pixel.lookups.values())
    response = await running.post({"eventType": "pageview", "siteId": site_id})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_site"
    assert sum(pixel.lookups.values()) == lookups
    assert running.services.ingest.rejected["invalid_site"] == 1
    assert not [r for r in caplog.records if site_id[:20] in r.getMessage()]


def test_overlong_input_never_reaches_the_domain_cache() -> None:
    """A value longer than the bound is refused without a cache entry, so junk cannot pin memory there."""
    before = len(sites._DOMAINS)
    for n in range(50):
        assert normalize_domain(f"{n}" + "a" * 10_000) is None
    assert len(sites._DOMAINS) == before


def test_zone_ids_and_trailing_newlines_are_not_host_names() -> None:
    """An IP literal with a zone id is refused; surrounding whitespace is trimmed, an inner newline refused."""
    assert normalize_domain("[::1%\r\n]") is None
    assert normalize_domain("fe80::1%eth0") is None
    assert normalize_domain("[::1]") == "::1"
    assert normalize_domain(" Shop.Acme.com.\n") == "shop.acme.com"
    assert normalize_domain("shop.acme.com\nx") is None
    assert normalize_domain(".".join(["a" * 63] * 3) + "." + "b" * 61) is not None  # 253 bytes: the longest
    assert normalize_domain(".".join(["a" * 63] * 3) + "." + "b" * 62) is None


def test_origin_host_with_zone_id_or_huge_header_matches_no_site() -> None:
    """An Origin/Referer whose host is junk, or that is too long to be an origin, has no host and is not cached."""
    assert host_of(b"http://[::1%0d%0aforged]") == ""
    assert host_of(b"http://[fe80::1%eth0]:80") == ""
    before = len(origins._HOSTS)
    for n in range(50):
        assert host_of(b"https://" + str(n).encode() + b"a" * 30_000 + b".com") == ""
    assert len(origins._HOSTS) == before
    # A long Referer is still judged by its host: the path is cut off before the cache sees it.
    assert host_of(b"https://shop.acme.com/" + b"p" * 30_000) == "shop.acme.com"


async def test_sub_event_with_junk_site_id_is_refused_alone(running: Running, db: asyncpg.Connection) -> None:
    """In a batch, an event whose own siteId is junk is rejected as invalid_site; its neighbours are stored."""
    response = await running.post(
        {
            "eventType": "batch",
            "siteId": "acme.com",
            "events": [
                {"eventType": "a"},
                {"eventType": "b", "siteId": "[::1%\r\nX]"},
                {"eventType": "c", "siteId": "acme.com"},
            ],
        }
    )
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["events_rejected"]] == [1]
    assert running.services.ingest.rejected["invalid_site"] == 1
    await running.services.buffer.drain()
    assert await db.fetchval("SELECT count(*) FROM events_log") == 2


async def test_trailing_whitespace_in_site_id_is_never_stored(running: Running, db: asyncpg.Connection) -> None:
    """A siteId with a trailing newline is stored as the bare domain, never with the newline."""
    response = await running.post({"eventType": "pageview", "siteId": "acme.com\n"})
    assert response.status_code == 200, response.text
    await running.services.buffer.drain()
    assert await db.fetchval("SELECT site_id FROM events_log") == "acme.com"


async def test_client_id_with_trailing_newline_from_directory_is_refused(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """pixel-management's client_id "x\\n" is an unusable config (503), never a stored client id."""
    pixel.domains["newline.com"] = site_config("client_newline\n")
    running = await make_app()
    response = await running.post({"eventType": "pageview", "siteId": "newline.com"})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "authorization_unavailable"
    await running.services.buffer.drain()
    assert await db.fetchval("SELECT count(*) FROM events_log") == 0
