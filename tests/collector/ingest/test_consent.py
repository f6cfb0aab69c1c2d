"""Consent and Global Privacy Control at ingest, and cookieless visitor ids from the daily salts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from collector.ingest.consent import cookieless_id
from collector.storage.salts import VisitorSalts
from tests.conftest import MakeApp
from tests.pixel_management import PixelManagement, site_config

IDS = {"visitorId": "v-123", "sessionId": "s-456"}
COLUMNS = "event_type, consent, visitor_id, session_id, ip, ip_hash"


async def stored(db: asyncpg.Connection) -> dict[str, dict[str, object]]:
    return {r["event_type"]: dict(r) for r in await db.fetch(f"SELECT {COLUMNS} FROM events_log")}


async def test_gpc_and_denied_consent_keep_no_ids_and_no_address(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """Sec-GPC: 1 or consent.analytics false: no visitor or session id and no IP, hashed or not; the state is stored."""
    running = await make_app()
    await running.post({"eventType": "gpc", "siteId": "acme.com", **IDS}, headers={"sec-gpc": "1"})
    await running.post({"eventType": "denied", "siteId": "eu-shop.com", "consent": {"analytics": False}, **IDS})
    await running.post(
        {"eventType": "batch", "siteId": "acme.com", "consent": {"analytics": False, "marketing": False}, **IDS,
         "events": [{"eventType": "denied-sub", "visitorId": "own", "sessionId": "own"}]},
    )  # fmt: skip
    await running.services.buffer.drain()
    rows = await stored(db)
    for name, state in (("gpc", "gpc"), ("denied", "denied"), ("denied-sub", "denied")):
        row = rows[name]
        assert row["consent"] == state
        assert (row["session_id"], row["ip"], row["ip_hash"]) == (None, None, None)
    assert rows["gpc"]["visitor_id"] is None and rows["denied-sub"]["visitor_id"] is None


async def test_granted_and_unknown_consent_keep_what_the_client_allows(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """With consent (or none said, under a default that allows) ids and the address are kept as before."""
    running = await make_app()
    await running.post({"eventType": "granted", "siteId": "acme.com", "consent": {"analytics": True}, **IDS})
    await running.post({"eventType": "unknown", "siteId": "acme.com", **IDS})
    await running.services.buffer.drain()
    rows = await stored(db)
    for name in ("granted", "unknown"):
        assert rows[name]["consent"] == name
        assert (rows[name]["visitor_id"], rows[name]["session_id"]) == ("v-123", "s-456")
        assert str(rows[name]["ip"]) == "203.0.113.7"


async def test_an_opt_in_client_keeps_nothing_identifying_until_consent_is_given(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """Under consent.default_behavior opt_in an event that says nothing is treated as not consenting."""
    pixel.domains["optin.com"] = site_config("client_optin", consent={"required": True, "default_behavior": "opt_in"})
    running = await make_app()
    await running.post({"eventType": "silent", "siteId": "optin.com", **IDS})
    await running.post({"eventType": "yes", "siteId": "optin.com", "consent": {"analytics": True}, **IDS})
    await running.services.buffer.drain()
    rows = await stored(db)
    assert (rows["silent"]["consent"], rows["silent"]["visitor_id"], rows["silent"]["ip"]) == ("unknown", None, None)
    assert (rows["yes"]["visitor_id"], str(rows["yes"]["ip"])) == ("v-123", "203.0.113.7")


async def test_a_malformed_consent_is_refused_with_a_clear_error(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A consent that is not {analytics: bool, ...} is refused (422 invalid_event), and so is a sub-event's own."""
    running = await make_app()
    for consent in ("yes", {"analytics": "yes"}, {"analytics": True, "marketing": 1}):
        response = await running.post({"eventType": "a", "siteId": "acme.com", "consent": consent})
        assert response.status_code == 422 and response.json()["error"] == "invalid_event"
    response = await running.post(
        {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "a", "consent": {"analytics": True}}]}
    )
    assert response.status_code == 422 and "wrapper" in str(response.json())


async def test_a_gdpr_visitor_without_consent_gets_a_daily_cookieless_id(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """Denied under gdpr: the visitor id is derived on the server, the same for one address and agent, else not."""
    first = await make_app(client_host="203.0.113.7")
    other = await make_app(client_host="198.51.100.9")
    denied = {"siteId": "eu-shop.com", "consent": {"analytics": False}, **IDS}
    await first.post({"eventType": "one", **denied}, headers={"user-agent": "agent-a"})
    await first.post({"eventType": "two", **denied}, headers={"user-agent": "agent-a"})
    await other.post({"eventType": "three", **denied}, headers={"user-agent": "agent-a"})
    await first.services.buffer.drain()
    await other.services.buffer.drain()
    rows = await stored(db)
    one, two, three = (rows[name]["visitor_id"] for name in ("one", "two", "three"))
    assert isinstance(one, str) and len(one) == 32 and one not in ("v-123",)
    assert one == two != three
    assert rows["one"]["session_id"] is None and rows["one"]["ip_hash"] is None
    salt = first.services.ingest.salts.today() if first.services.ingest.salts else None
    assert salt is not None and one == cookieless_id(salt, "eu-shop.com", "203.0.113.7", "agent-a")


async def test_a_cookieless_client_never_keeps_the_visitors_own_id(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """Under features.cookieless the sent visitor id is replaced by the derived one; consent keeps the session."""
    pixel.domains["nocookie.com"] = site_config("client_nocookie", features={"cookieless": True})
    running = await make_app()
    await running.post(
        {"eventType": "batch", "siteId": "nocookie.com", **IDS, "events": [{"eventType": "a", "visitorId": "own"}]}
    )
    await running.services.buffer.drain()
    row = (await stored(db))["a"]
    assert row["visitor_id"] not in (None, "v-123", "own") and row["session_id"] == "s-456"


async def test_salts_rotate_daily_and_old_ones_are_deleted(db: asyncpg.Connection, make_app: MakeApp) -> None:
    """A refresh keeps today's and tomorrow's salts, deletes older ones, and a new day's salt differs."""
    running = await make_app()
    today = datetime.now(UTC).date()
    await db.execute(
        "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        today - timedelta(days=2), b"old" * 8,
    )  # fmt: skip
    salts = VisitorSalts(running.services.store.pool)
    await salts.refresh()
    days = {r["day"]: bytes(r["salt"]) for r in await db.fetch("SELECT day, salt FROM visitor_salts")}
    assert sorted(days) == [today, today + timedelta(days=1)]
    assert days[today] != days[today + timedelta(days=1)] and salts.today() == days[today]
    assert cookieless_id(days[today], "a.com", "203.0.113.7", "x") != cookieless_id(
        days[today + timedelta(days=1)], "a.com", "203.0.113.7", "x"
    )


async def test_the_pixel_honours_global_privacy_control_too(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A GET /collect pixel sent with Sec-GPC: 1 keeps no session id and no address."""
    running = await make_app()
    params = {"eventType": "pixel", "siteId": "acme.com", "sessionId": "s9"}
    response = await running.client.get("/collect", params=params, headers={"sec-gpc": "1"})
    assert response.headers["x-collector-status"] == "accepted"
    await running.services.buffer.drain()
    row = (await stored(db))["pixel"]
    assert (row["consent"], row["session_id"], row["ip"], row["ip_hash"]) == ("gpc", None, None, None)
