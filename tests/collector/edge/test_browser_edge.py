"""The browser edge of /collect: CORS and origins, the pixel, gzip bodies, rate limits, the tracker, OpenAPI."""

from __future__ import annotations

import gzip
import json
import secrets

import asyncpg

from collector.edge.browser import GIF
from tests.conftest import MakeApp, Running, count_rows

EVENT = {"eventType": "pageview", "siteId": "acme.com", "sessionId": "s1"}


async def rejected(running: Running) -> dict[str, int]:
    health = (await running.client.get("/health")).json()
    counts: dict[str, int] = health["events"]["rejected"]
    return counts


async def test_preflight_allows_the_site_and_its_subdomains_only(running: Running) -> None:
    """OPTIONS from an authorized site or a subdomain gets CORS headers and a max age; another origin a bare 403."""
    for origin in ("https://shop.acme.com", "https://www.blog.acme.com:8443", "http://acme.com"):
        response = await running.client.options(
            "/collect", headers={"origin": origin, "access-control-request-method": "POST"}
        )
        assert response.status_code == 204, origin
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-max-age"] == "7200"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "content-type" in response.headers["access-control-allow-headers"]
    for origin in ("https://evil.org", "https://acme.com.evil.org", "https://notacme.com", "null"):
        response = await running.client.options("/collect", headers={"origin": origin})
        assert (response.status_code, response.json()["error"]) == (403, "origin_mismatch"), origin
        assert "access-control-allow-origin" not in response.headers
    edge = (await running.client.get("/health")).json()["edge"]
    assert edge["preflights"] == {"allowed": 3, "refused": 4}


async def test_post_from_the_site_gets_cors_and_from_elsewhere_is_refused(
    running: Running, db: asyncpg.Connection
) -> None:
    """A POST from the site (or a subdomain) is stored with CORS headers; from any other Origin it is a counted 403."""
    ok = await running.post(EVENT, headers={"origin": "https://www.acme.com"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://www.acme.com"
    assert "retry-after" in ok.headers["access-control-expose-headers"]
    for origin in ("https://evil.org", "https://xacme.com", "null"):
        refused = await running.post(
            {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "a"}, {"eventType": "b"}]},
            headers={"origin": origin},
        )
        assert (refused.status_code, refused.json()["error"]) == (403, "origin_mismatch"), origin
        assert "access-control-allow-origin" not in refused.headers
    await running.services.buffer.drain()
    assert await count_rows(db) == 1
    assert (await rejected(running))["origin_mismatch"] == 6  # two events in each of three requests


async def test_referer_is_judged_when_there_is_no_origin_and_servers_by_site_id(
    running: Running, db: asyncpg.Connection
) -> None:
    """Without Origin the Referer's host must match; with neither (a server-side sender) siteId alone decides."""
    assert (await running.post(EVENT, headers={"referer": "https://evil.org/page"})).status_code == 403
    assert (await running.post(EVENT, headers={"referer": "https://shop.acme.com/cart?x=1"})).status_code == 200
    assert (await running.post(EVENT)).status_code == 200
    await running.services.buffer.drain()
    assert await count_rows(db) == 2


async def test_gzip_bodies_are_inflated_and_bombs_refused_while_inflating(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """A gzip body is stored; one inflating past MAX_BODY_BYTES is 413, broken gzip 400, another encoding 415."""
    running = await make_app(max_body_bytes=100_000)
    headers = {"content-encoding": "gzip", "content-type": "text/plain"}
    ok = await running.client.post("/collect", content=gzip.compress(json.dumps(EVENT).encode()), headers=headers)
    assert ok.status_code == 200, ok.text
    bomb = gzip.compress(b'{"eventType": "x", "pad": "' + b"0" * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    response = await running.client.post("/collect", content=bomb, headers=headers)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")
    broken = await running.client.post("/collect", content=b"\x1f\x8bnot gzip at all", headers=headers)
    assert (broken.status_code, broken.json()["error"]) == (400, "invalid_encoding")
    truncated = await running.client.post("/collect", content=gzip.compress(b'{"a": 1}')[:-6], headers=headers)
    assert (truncated.status_code, truncated.json()["error"]) == (400, "invalid_encoding")
    brotli = await running.client.post("/collect", content=b"{}", headers={"content-encoding": "br"})
    assert (brotli.status_code, brotli.json()["error"]) == (415, "unsupported_media_type")
    await running.services.buffer.drain()
    assert await count_rows(db) == 1
    counts = await rejected(running)
    assert (counts["body_too_large"], counts["invalid_encoding"], counts["unsupported_media_type"]) == (1, 2, 1)


async def test_pixel_stores_the_event_and_always_answers_the_gif(running: Running, db: asyncpg.Connection) -> None:
    """GET /collect stores the query's event and answers an uncached GIF; a rejected one still gets the GIF."""
    params = {"eventType": "pageview", "siteId": "acme.com", "sessionId": "s9", "eventData": '{"title": "Home"}',
              "_": "12345"}  # fmt: skip
    response = await running.client.get("/collect", params=params, headers={"referer": "https://acme.com/"})
    assert (response.status_code, response.content) == (200, GIF)
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-collector-status"] == "accepted"
    for bad, reason in (
        ({"eventType": "a", "siteId": "unknown.org"}, "domain_not_authorized"),
        ({"eventType": "a", "siteId": "acme.com", "eventData": "{oops"}, "invalid_event"),
        ({"siteId": "acme.com"}, "invalid_event"),
    ):
        refused = await running.client.get("/collect", params=bad)
        assert (refused.status_code, refused.content) == (200, GIF)
        assert refused.headers["x-collector-rejected"] == reason
    copied = await running.client.get("/collect", params=params, headers={"referer": "https://evil.org/"})
    assert (copied.content, copied.headers["x-collector-rejected"]) == (GIF, "origin_mismatch")
    await running.services.buffer.drain()
    [row] = await db.fetch("SELECT * FROM events_log")
    assert (row["event_type"], row["session_id"], row["event_data"]) == ("pageview", "s9", {"title": "Home"})
    assert row["extra"] is None  # the cache buster is not kept
    counts = await rejected(running)
    assert (counts["domain_not_authorized"], counts["invalid_event"], counts["origin_mismatch"]) == (1, 2, 1)


async def test_the_alias_path_takes_posts_and_pixels(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """COLLECT_ALIAS_PATH serves POST and GET exactly like /collect."""
    running = await make_app(collect_alias_path="/x9")
    assert (await running.client.post("/x9", json=EVENT)).status_code == 200
    assert (await running.client.get("/x9", params=EVENT)).headers["x-collector-status"] == "accepted"
    await running.services.buffer.drain()
    assert await count_rows(db) == 2


async def test_rate_limit_per_address_answers_429_with_retry_after(make_app: MakeApp) -> None:
    """Past its burst, one address gets 429 with Retry-After (counted), whatever the site."""
    running = await make_app(rate_limit_ip_per_s=0.5, rate_limit_ip_burst=2)
    assert [(await running.post(EVENT)).status_code for _ in range(2)] == [200, 200]
    limited = await running.post(EVENT)
    assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
    assert limited.headers["retry-after"] == "2"
    pixel = await running.client.get("/collect", params=EVENT)
    assert pixel.headers["x-collector-rejected"] == "rate_limited"
    assert (await rejected(running))["rate_limited"] == 2


async def test_a_hot_site_is_limited_without_starving_the_others(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """The per-site bucket stops the site that floods, while another site's events keep being stored."""
    running = await make_app(rate_limit_site_per_s=0.1, rate_limit_site_burst=3)
    answers = [(await running.post(EVENT)).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    other = {"eventType": "pageview", "siteId": "eu-shop.com"}
    assert [(await running.post(other)).status_code for _ in range(3)] == [200, 200, 200]
    await running.services.buffer.drain()
    assert await count_rows(db) == 6


async def test_event_data_with_too_many_keys_is_rejected_alone(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """An eventData over MAX_EVENT_DATA_KEYS rejects its event; the others in the batch are stored."""
    running = await make_app(max_event_data_keys=5)
    batch = {"eventType": "batch", "siteId": "acme.com", "events": [
        {"eventType": "ok", "eventData": {str(i): i for i in range(5)}},
        {"eventType": "wide", "eventData": {str(i): i for i in range(6)}},
    ]}  # fmt: skip
    response = await running.post(batch)
    assert response.status_code == 200
    error = "`eventData` has 6 keys; at most 5 are accepted"
    assert response.json()["events_rejected"] == [{"index": 1, "error": error}]
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await db.fetch("SELECT event_type FROM events_log")] == ["ok"]


async def test_tracker_script_is_served_with_the_collect_path_and_validators(make_app: MakeApp) -> None:
    """TRACKER_PATH serves the script pointing at the alias path, cacheable, answering 304 to its own ETag."""
    running = await make_app(tracker_path="/t/a.js", collect_alias_path="/zz")
    script = await running.client.get("/t/a.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert 'new URL("/zz", script.src)' in script.text and "__COLLECT_PATH__" not in script.text
    assert "max-age" in script.headers["cache-control"]
    again = await running.client.get("/t/a.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304


async def test_openapi_describes_every_route(make_app: MakeApp) -> None:
    """/openapi.json lists every path the app serves, the configurable ones included."""
    running = await make_app(collect_alias_path="/e2", tracker_path="/c.js")
    document = (await running.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    served = {route.path for route in running.app.starlette.routes} | {"/collect", "/e2"}  # type: ignore[attr-defined]
    assert set(document["paths"]) == served
    assert set(document["paths"]["/collect"]) == {"post", "get", "options"}


async def test_openapi_needs_the_admin_token_in_production(make_app: MakeApp) -> None:
    """In production the API description is introspection for operators: 401 without the bearer token."""
    token = secrets.token_hex(32)
    running = await make_app(environment="production", admin_token=token, ip_hash_secret=secrets.token_hex(32))
    assert (await running.client.get("/openapi.json")).status_code == 401
    authorized = await running.client.get("/openapi.json", headers={"authorization": f"Bearer {token}"})
    assert authorized.status_code == 200


async def test_client_filter_never_mixes_clients_nor_shows_raw_ips(
    running_admin: MakeApp, db: asyncpg.Connection
) -> None:
    """/events/recent and /events/count with client_id answer that client alone, and no answer carries an IP."""
    running = await running_admin()
    await running.post({"eventType": "a", "siteId": "acme.com"})
    await running.post({"eventType": "b", "siteId": "eu-shop.com"})
    await running.services.buffer.drain()
    recent = (await running.client.get("/events/recent", params={"client_id": "client_eu_shop"})).json()
    assert [(e["eventType"], e["client_id"]) for e in recent] == [("b", "client_eu_shop")]
    count = (await running.client.get("/events/count", params={"client_id": "client_eu_shop"})).json()
    assert count["total_events"] == 1
    everything = (await running.client.get("/events/recent")).text + (await running.client.get("/dead-letters")).text
    assert "127.0.0.1" not in everything and '"ip' not in everything
    nul = await running.client.get("/events/recent", params={"client_id": "a\x00b"})
    assert (nul.status_code, nul.json()["error"]) == (422, "invalid_parameter")
