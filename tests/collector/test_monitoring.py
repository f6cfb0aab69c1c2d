"""Health, readiness, counts, recent events, and admin authentication."""

from __future__ import annotations

from tests.conftest import MakeApp, Running


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
    assert set(recent[0]) >= {"eventType", "client_id", "site_id", "session_id", "created_at"}
    assert (recent[0]["client_id"], recent[0]["site_id"], recent[0]["session_id"]) == (
        "client_eu_shop",
        "eu-shop.com",
        "s1",
    )
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
