"""A corpus of malformed requests: each gets its documented code, never a 5xx, and good events beside bad ones stay."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.conftest import MakeApp, count_rows

JSON_TYPE = {"content-type": "application/json"}
GOOD = '{"eventType": "good", "siteId": "acme.com"}'


def nested(depth: int) -> bytes:
    return b'{"eventType": "x", "siteId": "acme.com", "eventData": ' + b'{"a": ' * (depth - 1) + b"1" + b"}" * depth


# (name, body, content type, status, error)
CORPUS: list[tuple[str, bytes, str | None, int, str]] = [
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("truncated JSON", GOOD[:-5].encode(), "application/json", 400, "invalid_json"),
    ("a JSON array", b"[" + GOOD.encode() + b"]", "application/json", 400, "invalid_json"),
    ("a JSON string", b'"pageview"', "application/json", 400, "invalid_json"),
    ("NaN", b'{"eventType": "x", "siteId": "acme.com", "eventData": {"v": NaN}}', "application/json", 400,
     "invalid_json"),
    ("Infinity", b'{"eventType": "x", "siteId": "acme.com", "n": Infinity}', "application/json", 400, "invalid_json"),
    ("a number too big for a double", b'{"eventType": "x", "siteId": "acme.com", "n": 1e999}', "application/json", 400,
     "invalid_json"),
    ("invalid UTF-8", b'{"eventType": "x\xff\xfe", "siteId": "acme.com"}', "application/json", 400, "invalid_json"),
    ("a lone surrogate", b'{"eventType": "x\\ud800", "siteId": "acme.com"}', "application/json", 400, "invalid_json"),
    ("100-level nesting", nested(100), "application/json", 400, "invalid_json"),
    ("form content type", b"eventType=x&siteId=acme.com", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("multipart content type", b"--b--", "multipart/form-data; boundary=b", 415, "unsupported_media_type"),
    ("XML content type", b"<event/>", "application/xml", 415, "unsupported_media_type"),
    ("eventType a number", b'{"eventType": 5, "siteId": "acme.com"}', "application/json", 422, "invalid_event"),
    ("siteId an object", b'{"eventType": "x", "siteId": {"a": 1}}', "application/json", 422, "invalid_site"),
    ("siteId not a domain", b'{"eventType": "x", "siteId": "../../etc"}', "application/json", 422, "invalid_site"),
    ("events an object", b'{"eventType": "batch", "siteId": "acme.com", "events": {}}', "application/json", 422,
     "invalid_event"),
    ("events empty", b'{"eventType": "batch", "siteId": "acme.com", "events": []}', "application/json", 422,
     "invalid_event"),
    ("10,000-event batch", json.dumps({"eventType": "batch", "siteId": "acme.com",
                                       "events": [{"eventType": "e"}] * 10_000}).encode(), "application/json", 422,
     "invalid_event"),
    ("a huge timestamp", b'{"eventType": "x", "siteId": "acme.com", "timestamp": "99999-01-01T00:00:00Z"}',
     "application/json", 422, "invalid_event"),
    ("eventData a list", b'{"eventType": "x", "siteId": "acme.com", "eventData": [1]}', "application/json", 422,
     "invalid_event"),
    ("eventId not a UUID", b'{"eventType": "x", "siteId": "acme.com", "eventId": "123"}', "application/json", 422,
     "invalid_event"),
    ("sessionId a number", b'{"eventType": "x", "siteId": "acme.com", "sessionId": 12}', "application/json", 422,
     "invalid_event"),
    ("eventType too long", json.dumps({"eventType": "x" * 101, "siteId": "acme.com"}).encode(), "application/json",
     422, "invalid_event"),
    ("url too long", json.dumps({"eventType": "x", "siteId": "acme.com", "url": "u" * 9000}).encode(),
     "application/json", 422, "invalid_event"),
    ("NUL in eventData", b'{"eventType": "x", "siteId": "acme.com", "eventData": {"a": "\\u0000"}}',
     "application/json", 422, "invalid_event"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "content_type", "status", "error"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_malformed_request_gets_its_documented_code(
    make_app: MakeApp, db: asyncpg.Connection, name: str, body: bytes, content_type: str, status: int, error: str
) -> None:
    """Each malformed request is refused with its documented status and JSON error code, and stores nothing."""
    running = await make_app(max_events_per_request=500)
    response = await running.client.post("/collect", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    await running.services.buffer.drain()
    assert await count_rows(db) == 0
    assert (await running.client.get("/health")).json()["events"]["rejected"].get(error, 0) >= 1


async def test_good_events_survive_every_kind_of_bad_neighbour(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """In one batch with wrong types everywhere, duplicate keys and big numbers, the valid events are stored."""
    running = await make_app()
    bad_events = [
        '{"eventType": 1}', '{"eventType": ""}', '{"eventType": null}', '"just a string"', "[]", "42",
        '{"eventType": "x", "eventData": "str"}', '{"eventType": "x", "eventId": 7}',
        '{"eventType": "x", "timestamp": 12}', '{"eventType": "x", "timestamp": "yesterday"}',
        '{"eventType": "x", "url": ["a"]}', '{"eventType": "x", "siteId": "other.com"}',
        '{"eventType": "batch", "events": []}', '{"eventType": "x", "eventData": {"k": "\\u0000"}}',
    ]  # fmt: skip
    good_events = [
        '{"eventType": "dup", "eventType": "good_dup"}',  # duplicate keys: the last one wins, as in every JSON parser
        '{"eventType": "big", "eventData": {"n": 123456789012345678901234567890, "f": 1.5e300, "neg": -0.0}}',
        '{"eventType": "unicode \\u00e9\\ud83d\\ude00", "eventData": {"emoji": "\\ud83d\\ude00"}}',
    ]
    body = '{"eventType": "batch", "siteId": "acme.com", "events": [' + ", ".join(bad_events + good_events) + "]}"
    response = await running.client.post("/collect", content=body.encode(), headers=JSON_TYPE)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["events_processed"] == len(good_events)
    assert [r["index"] for r in answer["events_rejected"]] == list(range(len(bad_events)))
    await running.services.buffer.drain()
    stored = {r["event_type"] for r in await db.fetch("SELECT event_type FROM events_log")}
    assert stored == {"good_dup", "big", "unicode é😀"}
    assert (await running.client.get("/health")).json()["events"]["rejected"]["invalid_event"] == len(bad_events)
