"""Health, readiness, counts, recent events, and admin authentication."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.conftest import MakeApp, Running

# The request's fields read back under the names they are sent with, the server's additions in the seed's
# snake_case (its README filters with jq '.[] | {eventType, client_id, created_at}').
RECENT_FIELDS = {
    "eventId", "eventType", "eventData", "sessionId", "visitorId", "siteId", "url", "path", "referrer", "timestamp",
    "client_id", "created_at",
}  # fmt: skip


async def test_health_reports_database_buffer_and_mode(running: Running) -> None:
    """/health has the seed's fields plus buffer depth and ack mode."""
    response = await running.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["ack_mode"]) == ("healthy", "connected", "buffered")
    assert body["buffer"]["depth"] == 0 and body["buffer"]["capacity"] == 100_000
    assert body["timestamp"].endswith("Z")


async def test_health_and_readiness_fail_when_the_database_is_down(running: Running) -> None:
    """With the pool unable to reach PostgreSQL, /health and /readyz answer 503 while /livez stays 200."""
    await running.services.store.pool.close()
    health = await running.client.get("/health")
    assert health.status_code == 503
    assert health.json()["database"] == "unreachable"
    ready = await running.client.get("/readyz")
    assert ready.status_code == 503 and "database_unreachable" in ready.json()["reasons"]
    assert (await running.client.get("/livez")).status_code == 200


async def test_readyz_is_ready_when_all_is_well(running: Running) -> None:
    """/readyz answers 200 with a database and room in the buffer."""
    response = await running.client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_count_and_recent_filter_by_client(make_app: MakeApp) -> None:
    """/events/count and /events/recent report stored events, per client when asked, newest first."""
    running = await make_app(client_host="127.0.0.1")
    await running.post(
        {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": f"a{i}"} for i in range(3)]}
    )
    await running.post({"eventType": "eu", "siteId": "eu-shop.com", "sessionId": "s1"})
    await running.services.buffer.drain()
    assert (await running.client.get("/events/count")).json()["total_events"] == 4
    acme = (await running.client.get("/events/count", params={"client_id": "client_acme_corp"})).json()
    assert (acme["total_events"], acme["client_id"]) == (3, "client_acme_corp")
    recent = (await running.client.get("/events/recent", params={"limit": 2})).json()
    assert [e["eventType"] for e in recent] == ["eu", "a2"]
    newest = recent[0]
    assert (newest["client_id"], newest["siteId"], newest["sessionId"]) == ("client_eu_shop", "eu-shop.com", "s1")
    only_acme = (await running.client.get("/events/recent", params={"client_id": "client_acme_corp"})).json()
    assert {e["client_id"] for e in only_acme} == {"client_acme_corp"} and len(only_acme) == 3
    assert (await running.client.get("/events/recent", params={"limit": "x"})).status_code == 422
    assert (await running.client.get("/events/recent", params={"limit": 100000})).status_code == 200


async def test_count_includes_what_is_still_buffered(make_app: MakeApp) -> None:
    """buffered_events shows events accepted but not yet flushed."""
    running = await make_app(client_host="127.0.0.1", flush_interval_ms=60_000)
    await running.post({"eventType": "a", "siteId": "acme.com"})
    body = (await running.client.get("/events/count")).json()
    assert (body["total_events"], body["buffered_events"]) == (0, 1)


async def test_admin_endpoints_need_the_bearer_token_when_set(make_app: MakeApp) -> None:
    """With ADMIN_TOKEN set, /events/* answer 401 without the right bearer token, 200 with it."""
    running = await make_app(client_host="127.0.0.1", admin_token="s3cret-token")
    for path in ("/events/count", "/events/recent"):
        assert (await running.client.get(path)).status_code == 401
        wrong = await running.client.get(path, headers={"authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")
        right = await running.client.get(path, headers={"authorization": "Bearer s3cret-token"})
        assert right.status_code == 200


async def test_admin_endpoints_answer_loopback_only_without_a_token(make_app: MakeApp) -> None:
    """With no ADMIN_TOKEN (development), /events/* answer loopback clients and refuse others with 403."""
    remote = await make_app(client_host="203.0.113.5")
    local = await make_app(client_host="::1")
    for path in ("/events/count", "/events/recent"):
        refused = await remote.client.get(path)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        assert (await local.client.get(path)).status_code == 200
    assert (await remote.client.get("/health")).status_code == 200


async def test_recent_events_carry_what_was_sent_under_one_naming_style(running_admin: MakeApp) -> None:
    """/events/recent shows eventData, url, path and referrer, with the seed's jq fields (eventType, client_id,
    created_at) and the request's own names for the rest."""
    running = await running_admin()
    event = {
        "eventType": "pageview", "siteId": "acme.com", "sessionId": "s1", "visitorId": "v1",
        "url": "https://acme.com/cart?x=1", "path": "/cart", "referrer": "https://search.example/",
        "eventData": {"title": "Cart"}, "timestamp": "2025-07-11T12:00:00Z",
    }  # fmt: skip
    sent = datetime.now(UTC)
    assert (await running.post(event)).status_code == 200
    await running.services.buffer.drain()
    [recent] = (await running.client.get("/events/recent")).json()
    assert set(recent) == RECENT_FIELDS
    assert (recent["eventType"], recent["client_id"]) == ("pageview", "client_acme_corp")
    assert (recent["eventData"], recent["url"], recent["path"], recent["referrer"]) == (
        {"title": "Cart"}, "https://acme.com/cart?x=1", "/cart", "https://search.example/",
    )  # fmt: skip
    assert (recent["visitorId"], recent["timestamp"]) == ("v1", "2025-07-11T12:00:00+00:00")
    assert sent <= datetime.fromisoformat(recent["created_at"]) <= datetime.now(UTC)


async def test_dead_letter_received_at_is_the_requests_time_not_the_flushs(running_admin: MakeApp) -> None:
    """A refused request's sample is dated when the request came, however later the accounting writes it."""
    running = await running_admin()
    before = datetime.now(UTC)
    assert (await running.post({"eventType": "x", "siteId": "stranger.net"})).status_code == 403
    after = datetime.now(UTC)
    await asyncio.sleep(1.5)  # the accounting writes every few seconds; here it writes well after the request
    await running.services.accounting.flush()
    [letter] = (await running.client.get("/dead-letters")).json()
    assert before <= datetime.fromisoformat(letter["received_at"]) <= after, (before, letter["received_at"], after)
