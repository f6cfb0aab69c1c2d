"""Hostile bytes at the Segment, Snowplow and Plausible doors: every one answered with a clear error (never a 5xx,
never a 2xx for what was dropped), and only what was answered as accepted stored."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import asyncpg
import pytest

from tests.conftest import MakeApp, Running, wait_for_rows
from tests.pixel_management import PixelManagement

KEY = "wkAcmeServer0001"
TP2 = "/com.snowplowanalytics.snowplow/tp2"
SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
DEEP: Any = {}
for _ in range(200):
    DEEP = {"a": DEEP}
WIDE = {f"k{i}": i for i in range(5000)}
JUNK_VALUES: list[Any] = [None, 0, -1, 1e308, True, "", "\x00", "\ud800" * 0 + "é" * 10, [], {}, [[[]]], "x" * 70_000,
                          DEEP, WIDE, "../../etc/passwd", "<script>", "%00", "\u202e"]  # fmt: skip

# Raw bodies no door may take: not JSON, not an object, invalid UTF-8, deeply nested, a NUL.
RAW_BODIES = [b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe", b"[" * 100_000, b'{"a":"\\u0000"}']


@pytest.fixture
async def app(make_app: MakeApp, pixel: PixelManagement) -> Running:
    pixel.write_keys[KEY] = "acme.com"
    return await make_app()


def segment_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(path, body): one hostile value in each field a mapping reads, and a few whole-body shapes."""
    bodies: list[tuple[str, dict[str, Any]]] = [("/v1/batch", {"batch": v}) for v in JUNK_VALUES]
    bodies += [("/v1/batch", {"batch": [v]}) for v in JUNK_VALUES]
    fields = ("type", "event", "messageId", "anonymousId", "userId", "properties", "traits", "timestamp", "sentAt",
              "context", "writeKey")  # fmt: skip
    for name in fields:
        for value in JUNK_VALUES:
            bodies.append(("/v1/batch", {"batch": [{"type": "track", "event": "e", "anonymousId": "a", name: value}]}))
    for value in JUNK_VALUES:
        context = {"page": {"url": value}, "ip": value, "userAgent": value}
        bodies.append(("/v1/track", {"event": "e", "context": context}))
    return bodies


def snowplow_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for name in ("e", "eid", "aid", "url", "dtm", "stm", "ttm", "ue_px", "ue_pr", "cx", "co", "ip", "ua", "duid"):
        for value in [*JUNK_VALUES, "!!!not base64", base64.b64encode(b"[1,2").decode(), "99999999999999999999"]:
            events.append({"e": "ue" if name.startswith("ue") else "pv", "aid": "acme.com", name: value})
    return events


async def assert_no_server_error(app: Running, path: str, **request: Any) -> int:
    response = await app.client.post(path, **request)
    assert response.status_code < 500, (path, request, response.text)
    assert response.headers["content-type"].split(";")[0] in ("application/json", "text/plain")
    return response.status_code


async def test_hostile_segment_bodies_get_clear_answers_and_store_only_valid_events(
    app: Running, db: asyncpg.Connection
) -> None:
    """Hundreds of hostile Segment bodies: none a 5xx; what was stored is exactly what was answered 2xx."""
    accepted = 0
    for raw in RAW_BODIES:
        await assert_no_server_error(app, "/v1/batch", content=raw, auth=(KEY, ""))
    for path, body in segment_bodies():
        response = await app.client.post(path, content=json.dumps(body).encode(), auth=(KEY, ""))
        assert response.status_code < 500, (body, response.text)
        if response.status_code == 200:
            accepted += 1 - len(response.json().get("events_rejected", []))  # one message per body
    assert accepted > 0  # the corpus also holds valid events with odd but acceptable values
    await wait_for_rows(db, accepted)
    await asyncio.sleep(0.2)  # nothing more arrives later
    assert await db.fetchval("SELECT count(*) FROM events_log") == accepted


async def test_hostile_snowplow_events_get_clear_answers(app: Running) -> None:
    """Hostile tp2 bodies and parameters (junk base64, numbers past any date, deep JSON): none a 5xx."""
    for raw in RAW_BODIES:
        await assert_no_server_error(app, TP2, content=raw)
    for body in [{"schema": v, "data": [{}]} for v in JUNK_VALUES] + [
        {"schema": SCHEMA, "data": v} for v in JUNK_VALUES
    ]:
        await assert_no_server_error(app, TP2, json=body)
    for event in snowplow_events():
        await assert_no_server_error(app, TP2, content=json.dumps({"schema": SCHEMA, "data": [event]}).encode())
        response = await app.client.get("/i", params={k: str(v)[:2000] for k, v in event.items()})
        assert response.status_code < 500 and response.headers["content-type"] == "image/gif"
    junk_query = await app.client.get("/i?" + "&".join(f"p{i}=1" for i in range(1000)))
    assert junk_query.status_code == 422


async def test_hostile_plausible_bodies_get_clear_answers(app: Running) -> None:
    """Hostile Plausible bodies: every field junk in turn, short and long names; none a 5xx."""
    for raw in RAW_BODIES:
        await assert_no_server_error(app, "/api/event", content=raw, headers={"content-type": "text/plain"})
    base = {"name": "pageview", "url": "https://acme.com/", "domain": "acme.com"}
    for name in ("name", "url", "domain", "referrer", "props", "revenue", "n", "u", "d", "p", "m", "$"):
        for value in [*JUNK_VALUES, "{not json", ",".join(["acme.com"] * 50)]:
            await assert_no_server_error(app, "/api/event", content=json.dumps({**base, name: value}).encode())


async def test_write_keys_of_any_shape_never_reach_the_directory_unless_well_formed(
    app: Running, pixel: PixelManagement
) -> None:
    """Keys with slashes, dots, 10 KB of text or control characters: 401 without a pixel-management lookup."""
    for key in ("../../admin", "a/b/c/d/e/f/g/h", "k" * 10_000, "key\nwith\nnewlines", "ключ-ключ-ключ", "%2e%2e%2f"):
        response = await app.client.post("/v1/track", json={"event": "e", "anonymousId": "a", "writeKey": key})
        assert response.status_code == 401
    assert not [k for k in pixel.lookups if k.startswith("write_key:")]
