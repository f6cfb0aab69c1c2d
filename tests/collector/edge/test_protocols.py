"""The Segment, Snowplow and Plausible front doors in-process: the rules that stay /collect's (write keys, origins,
limits, privacy, groups, acks) and the protocols' answers."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.conftest import MakeApp, Running, wait_for_rows
from tests.pixel_management import PixelManagement

KEY = "wkAcmeServer0001"
EU_KEY = "wkEuShopServer01"


@pytest.fixture
async def app(make_app: MakeApp, pixel: PixelManagement) -> Running:
    """A collector whose pixel-management knows a write key of acme.com's client and one of eu-shop.com's."""
    pixel.write_keys[KEY] = "acme.com"
    pixel.write_keys[EU_KEY] = "eu-shop.com"
    return await make_app()


def track(**fields: Any) -> dict[str, Any]:
    return {"event": "Signed Up", "anonymousId": "anon-1", "properties": {"plan": "pro"}, **fields}


async def rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM events_log ORDER BY id")


async def test_segment_track_with_a_pixel_management_write_key_is_stored_for_the_keys_client(
    app: Running, db: asyncpg.Connection, pixel: PixelManagement
) -> None:
    """A server-side track (no page) with a key pixel-management resolves is stored under the key's domain."""
    response = await app.client.post("/v1/track", json=track(messageId="m-1"), auth=(KEY, ""))
    assert (response.status_code, response.json()) == (200, {"success": True})
    await wait_for_rows(db, 1)
    [row] = await rows(db)
    assert (row["event_type"], row["site_id"], row["client_id"]) == ("Signed Up", "acme.com", "client_acme_corp")
    assert pixel.lookups[f"write_key:{KEY}"] == 1


async def test_segment_refuses_a_missing_or_unknown_key_with_401_and_counts_it(
    app: Running, db: asyncpg.Connection
) -> None:
    """No key, a malformed one or one no client has: 401 invalid_write_key, counted, nothing stored."""
    for auth in ((), ("short", ""), ("wkNobodyHasThis1", "")):
        response = await app.client.post("/v1/track", json=track(), auth=auth or None)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_write_key")
        assert response.headers["www-authenticate"].startswith("Basic")
    assert app.services.ingest.rejected["invalid_write_key"] == 3
    assert await db.fetchval("SELECT count(*) FROM events_log") == 0


async def test_segment_refuses_a_key_of_another_client_than_the_pages_site(app: Running) -> None:
    """eu-shop.com's key sending acme.com's page events: 403 write_key_mismatch, counted."""
    page = {"context": {"page": {"url": "https://acme.com/a"}}}
    response = await app.client.post("/v1/track", json=track(**page), auth=(EU_KEY, ""))
    assert (response.status_code, response.json()["code"]) == (403, "write_key_mismatch")
    assert app.services.ingest.rejected["write_key_mismatch"] == 1


async def test_segment_browser_request_from_another_sites_page_is_refused_by_the_origin_rule(app: Running) -> None:
    """A browser's Origin that is not the page's site: 403 origin_mismatch, as on /collect."""
    page = {"context": {"page": {"url": "https://acme.com/a"}}}
    headers = {"origin": "https://evil.example"}
    response = await app.client.post("/v1/track", json=track(**page), auth=(KEY, ""), headers=headers)
    assert (response.status_code, response.json()["code"]) == (403, "origin_mismatch")


async def test_segment_batch_of_two_sites_stores_the_authorized_one_and_names_the_other(
    app: Running, db: asyncpg.Connection
) -> None:
    """A batch whose second message's page is on an unknown site: 200, that message in events_rejected, one row."""
    batch = {
        "batch": [
            {"type": "track", **track(messageId="a")},
            {"type": "page", "context": {"page": {"url": "https://nobody.example/"}}},
            {"type": "nonsense"},
        ]
    }
    response = await app.client.post("/v1/batch", json=batch, auth=(KEY, ""))
    body = response.json()
    assert response.status_code == 200 and body["success"] is True
    assert [r["index"] for r in body["events_rejected"]] == [1, 2]
    await wait_for_rows(db, 1)


async def test_segment_timestamp_is_corrected_for_the_devices_clock_skew(app: Running, db: asyncpg.Connection) -> None:
    """A device clock an hour ahead: the stored timestamp is received - (sentAt - timestamp), not the device's."""
    device_now = datetime.now(UTC) + timedelta(hours=1)
    occurred = device_now - timedelta(seconds=30)
    message = track(timestamp=occurred.isoformat(), sentAt=device_now.isoformat())
    assert (await app.client.post("/v1/track", json=message, auth=(KEY, ""))).status_code == 200
    await wait_for_rows(db, 1)
    [row] = await rows(db)
    skew = row["received_at"] - row["event_timestamp"]
    assert timedelta(seconds=29) < skew < timedelta(seconds=32)
    assert row["extra"]["originalTimestamp"] == occurred.isoformat()


async def test_segment_context_ip_is_hashed_under_a_gdpr_sites_rule_and_never_kept_in_extra(
    app: Running, db: asyncpg.Connection
) -> None:
    """context.ip of an eu-shop.com (gdpr) event: no raw address anywhere, an ip_hash stored."""
    message = track(context={"ip": "198.51.100.23", "userAgent": "Agent/1"})
    assert (await app.client.post("/v1/track", json=message, auth=(EU_KEY, ""))).status_code == 200
    await wait_for_rows(db, 1)
    [row] = await rows(db)
    assert (row["ip"], row["user_agent"]) == (None, "Agent/1") and row["ip_hash"]
    assert "198.51.100.23" not in json.dumps(row["extra"])


async def test_segment_gzip_bomb_is_refused_within_the_body_limit(make_app: MakeApp, pixel: PixelManagement) -> None:
    """A gzip body inflating past MAX_BODY_BYTES: 413, counted, whatever it would inflate to."""
    pixel.write_keys[KEY] = "acme.com"
    running = await make_app(max_body_bytes=64 * 1024)
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    response = await running.client.post("/v1/batch", content=bomb, headers=headers, auth=(KEY, ""))
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


async def test_segment_gzip_batch_is_read(app: Running, db: asyncpg.Connection) -> None:
    """A gzip batch (RudderStack's default) is inflated and stored."""
    body = gzip.compress(json.dumps({"batch": [{"type": "identify", "userId": "u", "traits": {"a": 1}}]}).encode())
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    response = await app.client.post("/v1/batch", content=body, headers=headers, auth=(KEY, ""))
    assert response.status_code == 200
    await wait_for_rows(db, 1)


async def test_segment_is_acknowledged_only_once_stored_in_durable_mode(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """ACK_MODE=durable: the 200 comes after the commit, so the row is there when the answer is."""
    pixel.write_keys[KEY] = "acme.com"
    running = await make_app(ack_mode="durable")
    assert (await running.client.post("/v1/track", json=track(), auth=(KEY, ""))).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM events_log") == 1


async def test_a_write_key_lookup_during_a_pixel_management_outage_answers_503(
    app: Running, pixel: PixelManagement
) -> None:
    """pixel-management down and the key never seen: 503 authorization_unavailable, which the SDKs retry."""
    pixel.status = 503
    response = await app.client.post("/v1/track", json=track(), auth=(KEY, ""))
    assert (response.status_code, response.json()["code"]) == (503, "authorization_unavailable")


async def test_snowplow_post_maps_each_event_and_refuses_a_bad_one_alone(app: Running, db: asyncpg.Connection) -> None:
    """tp2: a page view and a self-describing event (base64) stored; an `aid` that is no domain refused by index."""
    ue = {"schema": "iglu:x/unstruct_event/jsonschema/1-0-0",
          "data": {"schema": "iglu:com.acme/signup/jsonschema/1-0-0", "data": {"plan": "x"}}}  # fmt: skip
    ue_px = base64.urlsafe_b64encode(json.dumps(ue).encode()).decode().rstrip("=")
    eid = str(uuid.uuid4())
    body = {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [
            {"e": "pv", "eid": eid, "aid": "acme.com", "url": "https://acme.com/x", "dtm": "1700000000000"},
            {"e": "ue", "aid": "acme.com", "ue_px": ue_px, "tv": "py-1"},
            {"e": "pv", "aid": "not a domain"},
        ],
    }
    response = await app.client.post("/com.snowplowanalytics.snowplow/tp2", json=body)
    assert (response.status_code, response.text) == (200, "ok")
    await wait_for_rows(db, 2)
    by_type = {r["event_type"]: r for r in await rows(db)}
    assert str(by_type["pageview"]["event_id"]) == eid and by_type["pageview"]["path"] == "/x"
    assert by_type["signup"]["event_data"] == {"plan": "x"} and by_type["signup"]["extra"]["tv"] == "py-1"
    assert app.services.ingest.rejected["invalid_event"] == 1


async def test_snowplow_get_answers_the_gif_with_a_status_saying_what_happened(app: Running) -> None:
    """GET /i: 200 and the GIF when stored; the refusal's status (and the GIF) for an unknown site."""
    ok = await app.client.get("/i", params={"e": "pv", "aid": "acme.com", "url": "https://acme.com/"})
    refused = await app.client.get("/i", params={"e": "pv", "aid": "nobody.example"})
    assert (ok.status_code, ok.headers["content-type"], ok.headers["x-collector-status"]) == (
        200,
        "image/gif",
        "accepted",
    )
    assert (refused.status_code, refused.headers["x-collector-rejected"]) == (403, "domain_not_authorized")


async def test_plausible_refuses_bad_json_and_missing_fields_in_its_error_shape(app: Running) -> None:
    """Not JSON: 400 invalid_json; no domain: 422 invalid_event; both as {"errors": ...}."""
    bad = await app.client.post("/api/event", content=b"{not json", headers={"content-type": "text/plain"})
    missing = await app.client.post("/api/event", json={"name": "pageview", "url": "https://acme.com/"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_json") and "errors" in bad.json()
    assert (missing.status_code, missing.json()["error"]) == (422, "invalid_event")


async def test_plausible_domain_list_stores_the_event_once_per_site(app: Running, db: asyncpg.Connection) -> None:
    """`domain: "acme.com,shop.acme.com"`: one row per site."""
    event = {"name": "pageview", "url": "https://shop.acme.com/", "domain": "acme.com,shop.acme.com"}
    assert (await app.client.post("/api/event", json=event)).status_code == 202
    await wait_for_rows(db, 2)
    assert sorted(r["site_id"] for r in await rows(db)) == ["acme.com", "shop.acme.com"]


async def test_protocols_setting_switches_each_door_off(make_app: MakeApp) -> None:
    """PROTOCOLS=segment: /v1/track is served; /collect, /api/event and tp2 answer 404."""
    running = await make_app(protocols=("segment",))
    assert (await running.client.post("/v1/track", json={})).status_code == 401
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 404
    assert (await running.client.post("/api/event", json={})).status_code == 404
    assert (await running.client.post("/com.snowplowanalytics.snowplow/tp2", json={})).status_code == 404


async def test_preflight_of_an_authorized_origin_allows_credentials(app: Running) -> None:
    """OPTIONS from a page of an authorized site: 204 with the origin and credentials allowed; another: 403."""
    ok = await app.client.options("/com.snowplowanalytics.snowplow/tp2", headers={"origin": "https://shop.acme.com"})
    refused = await app.client.options("/api/event", headers={"origin": "https://evil.example"})
    assert (ok.status_code, ok.headers["access-control-allow-credentials"]) == (204, "true")
    assert refused.status_code == 403


def test_settings_refuse_unknown_protocols_and_an_alias_on_a_doors_path() -> None:
    """PROTOCOLS=collect,posthog and COLLECT_ALIAS_PATH=/i are refused at start, naming the variable."""
    from collector.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="PROTOCOLS"):
        Settings(protocols=("collect", "posthog")).check()
    with pytest.raises(SettingsError, match="COLLECT_ALIAS_PATH"):
        Settings(collect_alias_path="/i").check()
    assert Settings.from_env({"PROTOCOLS": "segment, plausible"}).protocols == ("segment", "plausible")
