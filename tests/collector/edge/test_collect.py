"""POST /collect: what is stored, what is rejected and with which answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from tests.conftest import MakeApp, Running
from tests.pixel_management import PixelManagement

SEED_BATCH = {
    "eventType": "batch",
    "sessionId": "sess_abc123",
    "visitorId": "vis_xyz789",
    "siteId": "acme.com",
    "timestamp": "2025-07-11T12:00:00Z",
    "events": [
        {"eventType": "click", "eventData": {"element": "button1"}},
        {"eventType": "scroll", "eventData": {"depth": 25}},
        {"eventType": "form_focus", "eventData": {"field": "email"}},
    ],
}


async def stored(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM events_log ORDER BY id")


async def test_single_event_is_stored_with_its_columns_and_client(running: Running, db: asyncpg.Connection) -> None:
    """A seed-shaped single event becomes one row attributed to the domain's client, with every field in place."""
    event_id = str(uuid.uuid4())
    sent = datetime.now(UTC)
    response = await running.post(
        {
            "eventType": "pageview",
            "eventId": event_id,
            "sessionId": "sess_abc123",
            "visitorId": "vis_xyz789",
            "siteId": "Shop.ACME.com.",
            "timestamp": "2025-07-11T12:00:00Z",
            "url": "https://shop.acme.com/cart?x=1",
            "path": "/cart",
            "referrer": "https://google.com/",
            "eventData": {"title": "Cart"},
        },
        headers={"user-agent": "Mozilla/5.0 test"},
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "message", "ack", "events_processed", "client_id", "timestamp"]
    assert body["status"] == "success"
    assert body["message"] == "1 event(s) received and queued"
    assert body["ack"] == "buffered"
    assert body["events_processed"] == 1
    assert body["client_id"] == "client_acme_corp"
    assert body["timestamp"].endswith("Z")
    await running.services.buffer.drain()
    [row] = await stored(db)
    assert str(row["event_id"]) == event_id
    assert row["event_type"] == "pageview"
    assert (row["session_id"], row["visitor_id"]) == ("sess_abc123", "vis_xyz789")
    assert row["site_id"] == "shop.acme.com"
    assert row["client_id"] == "client_acme_corp"
    assert row["event_timestamp"] == datetime(2025, 7, 11, 12, 0, tzinfo=UTC)
    assert (row["url"], row["path"], row["referrer"]) == (
        "https://shop.acme.com/cart?x=1",
        "/cart",
        "https://google.com/",
    )
    assert row["user_agent"] == "Mozilla/5.0 test"
    assert str(row["ip"]) == "203.0.113.7"
    assert row["ip_hash"] is None
    assert row["event_data"] == {"title": "Cart"}
    assert sent <= row["received_at"] <= datetime.now(UTC)  # the server's clock at receipt, not the event's
    assert row["xact_id"] is not None


async def test_batch_of_n_stores_n_rows_inheriting_the_wrapper(running: Running, db: asyncpg.Connection) -> None:
    """The seed's batch stores its three sub-events (not the wrapper), each inheriting the wrapper's fields."""
    response = await running.post(SEED_BATCH)
    assert response.status_code == 200
    assert response.json()["events_processed"] == 3
    assert response.json()["message"] == "3 event(s) received and queued"
    await running.services.buffer.drain()
    rows = await stored(db)
    assert [r["event_type"] for r in rows] == ["click", "scroll", "form_focus"]
    assert {r["session_id"] for r in rows} == {"sess_abc123"}
    assert {r["visitor_id"] for r in rows} == {"vis_xyz789"}
    assert {r["event_timestamp"] for r in rows} == {datetime(2025, 7, 11, 12, 0, tzinfo=UTC)}
    assert [r["event_data"] for r in rows] == [{"element": "button1"}, {"depth": 25}, {"field": "email"}]
    assert len({r["event_id"] for r in rows}) == 3


async def test_sub_event_fields_override_the_wrapper(running: Running, db: asyncpg.Connection) -> None:
    """A sub-event's own sessionId, url and timestamp win over the wrapper's."""
    batch = {
        **SEED_BATCH,
        "url": "https://acme.com/a",
        "events": [
            {"eventType": "a"},
            {
                "eventType": "b",
                "sessionId": "own",
                "url": "https://acme.com/b",
                "timestamp": "2025-01-02T03:04:05+02:00",
            },
        ],
    }
    assert (await running.post(batch)).status_code == 200
    await running.services.buffer.drain()
    first, second = await stored(db)
    assert (first["session_id"], first["url"]) == ("sess_abc123", "https://acme.com/a")
    assert (second["session_id"], second["url"]) == ("own", "https://acme.com/b")
    assert second["event_timestamp"] == datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC)


async def test_invalid_sub_events_are_listed_and_valid_ones_kept(running: Running, db: asyncpg.Connection) -> None:
    """One bad event never costs the good ones: invalid sub-events are listed by index, the rest stored."""
    batch = {
        **SEED_BATCH,
        "events": [
            {"eventType": "ok1"},
            {"eventData": {"no": "type"}},
            {"eventType": "ok2", "eventData": "not an object"},
            {"eventType": "bad_ts", "timestamp": "yesterday"},
            {"eventType": "other_site", "siteId": "evil.com"},
            {"eventType": "ok3", "siteId": "ACME.com"},
            "not an object",
            {"eventType": "x" * 101},
            {"eventType": "bad_id", "eventId": "nope"},
            {"eventType": "nul", "eventData": {"k": "a\u0000b"}},
        ],
    }
    response = await running.post(batch)
    assert response.status_code == 200
    body = response.json()
    assert body["events_processed"] == 2
    assert [r["index"] for r in body["events_rejected"]] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert all(r["error"] for r in body["events_rejected"])
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await stored(db)] == ["ok1", "ok3"]


async def test_all_invalid_events_answer_422_and_store_nothing(running: Running, db: asyncpg.Connection) -> None:
    """When no event is valid the answer is 422 invalid_event with every rejection listed."""
    response = await running.post({**SEED_BATCH, "events": [{"eventType": ""}, {"eventType": "x", "timestamp": "bad"}]})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_event"
    assert [r["index"] for r in body["events_rejected"]] == [0, 1]
    await running.services.buffer.drain()
    assert await stored(db) == []


async def test_unknown_fields_are_kept_in_extra(running: Running, db: asyncpg.Connection) -> None:
    """Fields the spec does not name are preserved (wrapper's inherited, the event's own winning)."""
    batch = {**SEED_BATCH, "appVersion": "1.2", "events": [{"eventType": "a", "experiment": {"arm": "B"}}]}
    assert (await running.post(batch)).status_code == 200
    await running.services.buffer.drain()
    [row] = await stored(db)
    assert row["extra"] == {"appVersion": "1.2", "experiment": {"arm": "B"}}


async def test_timestamp_missing_or_null_becomes_receive_time(running: Running, db: asyncpg.Connection) -> None:
    """A missing or null timestamp is the receive time, never an error."""
    for payload in (
        {"eventType": "a", "siteId": "acme.com"},
        {"eventType": "b", "siteId": "acme.com", "timestamp": None},
    ):
        assert (await running.post(payload)).status_code == 200
    await running.services.buffer.drain()
    for row in await stored(db):
        assert row["event_timestamp"] == row["received_at"]


async def test_timestamp_empty_string_becomes_receive_time_like_null(running: Running, db: asyncpg.Connection) -> None:
    """An empty-string timestamp is missing, not malformed: the receive time alone, in a batch the wrapper's."""
    single = {"eventType": "single", "siteId": "acme.com", "timestamp": ""}
    wrapper_empty = {**SEED_BATCH, "timestamp": "", "events": [{"eventType": "from_empty_wrapper", "sessionId": "s"}]}
    sub_empty = {**SEED_BATCH, "events": [{"eventType": "inherits", "timestamp": ""}]}
    for payload in (single, wrapper_empty, sub_empty):
        response = await running.post(payload)
        assert (response.status_code, response.json().get("events_rejected")) == (200, None), response.text
    await running.services.buffer.drain()
    rows = {r["event_type"]: r for r in await stored(db)}
    for name in ("single", "from_empty_wrapper"):
        assert rows[name]["event_timestamp"] == rows[name]["received_at"], name
    assert rows["inherits"]["event_timestamp"] == datetime(2025, 7, 11, 12, 0, tzinfo=UTC)


async def test_whitespace_only_event_type_is_refused_like_an_empty_one(
    running: Running, db: asyncpg.Connection
) -> None:
    """An eventType of spaces, tabs or other Unicode blanks is refused per event (422 alone, listed in a batch)."""
    for blank in (" ", "\t\n", "\u2003\u00a0"):
        response = await running.post({"eventType": blank, "siteId": "acme.com"})
        assert (response.status_code, response.json()["error"]) == (422, "invalid_event"), repr(blank)
    sub_events = [{"eventType": "   ", "eventData": {}}, {"eventType": " ok "}, {"eventType": "\t"}]
    batch = {**SEED_BATCH, "events": sub_events}
    response = await running.post(batch)
    assert response.status_code == 200
    assert [r["index"] for r in response.json()["events_rejected"]] == [0, 2]
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await stored(db)] == [" ok "]


async def test_both_ack_modes_answer_200_and_name_their_promise(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """Success is 200 in both modes (what seed clients count); the message and `ack` say queued or stored."""
    for mode, verb in (("buffered", "queued"), ("durable", "stored")):
        app = await make_app(ack_mode=mode)
        response = await app.post({"eventType": mode, "siteId": "acme.com"})
        body = response.json()
        assert (response.status_code, body["ack"], body["message"]) == (200, mode, f"1 event(s) received and {verb}")
        assert body["status"] == "success"


async def test_buffered_success_status_202_is_an_opt_in_for_buffered_acks_only(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """BUFFERED_SUCCESS_STATUS=202 makes buffered acks 202; durable acks and the GET pixel stay 200."""
    buffered = await make_app(buffered_success_status=202)
    response = await buffered.post({"eventType": "a", "siteId": "acme.com"})
    assert (response.status_code, response.json()["ack"]) == (202, "buffered")
    pixel = await buffered.client.get("/collect", params={"eventType": "px", "siteId": "acme.com"})
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")
    assert pixel.headers["x-collector-status"] == "accepted"
    durable = await make_app(ack_mode="durable", buffered_success_status=202)
    response = await durable.post({"eventType": "b", "siteId": "acme.com"})
    assert (response.status_code, response.json()["ack"]) == (200, "durable")


async def test_text_plain_beacons_are_accepted(running: Running, db: asyncpg.Connection) -> None:
    """sendBeacon's text/plain body is parsed as JSON like application/json."""
    response = await running.client.post(
        "/collect",
        content=b'{"eventType":"pageview","siteId":"acme.com"}',
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 200
    await running.services.buffer.drain()
    assert len(await stored(db)) == 1


async def test_error_codes_for_bad_requests(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """Each client mistake gets its documented status and error code, never a 500."""
    app = await make_app(max_body_bytes=2000, max_events_per_request=5)
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"\xff\xfe{}", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b'{"a": NaN}', "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": _nested(33), "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"x" * 2001, "headers": {"content-type": "application/json"}}, 413, "body_too_large"),
        ({"content": b"eventType=a", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415,
         "unsupported_media_type"),
        ({"json": {"siteId": "acme.com"}}, 422, "invalid_event"),
        ({"json": {"eventType": "a"}}, 422, "invalid_event"),
        ({"json": {"eventType": "a", "siteId": "not a domain!"}}, 422, "invalid_site"),
        ({"json": {"eventType": "batch", "siteId": "acme.com", "events": "nope"}}, 422, "invalid_event"),
        ({"json": {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "a"}] * 6}}, 422,
         "invalid_event"),
        ({"json": {"eventType": "a", "siteId": "unknown.org"}}, 403, "domain_not_authorized"),
    ]  # fmt: skip
    for kwargs, status, code in cases:
        response = await app.client.post("/collect", **kwargs)  # type: ignore[arg-type]
        assert (response.status_code, response.json()["error"]) == (status, code), kwargs
        assert response.json()["detail"]
    assert (await app.client.put("/collect", json={})).status_code == 405  # GET is the pixel, OPTIONS the preflight
    # Depth 32 itself is fine.
    ok = await app.client.post("/collect", content=_nested(32, b'"eventType":"deep","siteId":"acme.com",'))
    assert ok.status_code == 200, ok.text
    await app.services.buffer.drain()
    assert [r["event_type"] for r in await stored(db)] == ["deep"]


def _nested(depth: int, prefix: bytes = b"") -> bytes:
    """A JSON object `depth` levels deep (the outer object counts as one)."""
    return b"{" + prefix + b'"d":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


async def test_body_limit_holds_for_chunked_bodies_without_length(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A chunked body with no Content-Length is cut off at MAX_BODY_BYTES with 413."""
    app = await make_app(max_body_bytes=1000)

    async def chunks() -> object:
        for _ in range(20):
            yield b" " * 100

    response = await app.client.post("/collect", content=chunks(), headers={"content-type": "application/json"})  # type: ignore[arg-type]
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_unknown_domain_is_403_and_nothing_is_stored(
    running: Running, db: asyncpg.Connection, pixel: PixelManagement
) -> None:
    """An unregistered siteId is refused; nothing of it reaches the table."""
    response = await running.post({"eventType": "pageview", "siteId": "stranger.net"})
    assert response.status_code == 403
    assert response.json()["error"] == "domain_not_authorized"
    await running.services.buffer.drain()
    assert await stored(db) == []
    assert pixel.lookups["stranger.net"] == 1


async def test_domain_falls_back_to_the_url_host(running: Running, db: asyncpg.Connection) -> None:
    """Without siteId the host of url is the domain authorized."""
    response = await running.post({"eventType": "pageview", "url": "https://shop.acme.com:8443/x"})
    assert response.status_code == 200
    await running.services.buffer.drain()
    [row] = await stored(db)
    assert (row["site_id"], row["client_id"]) == ("shop.acme.com", "client_acme_corp")


async def test_client_id_in_the_payload_is_ignored(running: Running, db: asyncpg.Connection) -> None:
    """client_id comes from the lookup only; a payload's own claim is kept as an unknown field, not used."""
    response = await running.post({"eventType": "a", "siteId": "acme.com", "client_id": "someone_else"})
    assert response.json()["client_id"] == "client_acme_corp"
    await running.services.buffer.drain()
    [row] = await stored(db)
    assert row["client_id"] == "client_acme_corp"


async def test_unknown_paths_answer_json_404(running: Running) -> None:
    """Paths that do not exist get a JSON 404, like every other error."""
    response = await running.client.get("/wp-admin")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def _deep_value(levels: int) -> object:
    """A JSON value `levels` containers deep ({"k": {"k": ... {}}})."""
    value: object = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


async def test_depth_limit_counts_the_whole_body_in_batches(running: Running, db: asyncpg.Connection) -> None:
    """Depth counts from the body's root: eventData in a batch event starts at level 4, so 29 levels fit, 30 do not."""

    def batch(event: dict[str, object]) -> dict[str, object]:
        return {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "ok"}, event]}

    fits = await running.post(batch({"eventType": "deep", "eventData": _deep_value(29)}))
    assert fits.status_code == 200, fits.text
    for too_deep in (
        {"eventType": "deep", "eventData": _deep_value(30)},
        {"eventType": "deep", "custom": [_deep_value(29)]},
        {"eventData": _deep_value(30)},  # rejected for its missing type, still judged for depth
    ):
        response = await running.post(batch(too_deep))
        assert (response.status_code, response.json()["error"]) == (400, "invalid_json"), too_deep
    response = await running.post({"eventType": "batch", "siteId": "acme.com", "events": [[_deep_value(31)]]})
    assert response.status_code == 400
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await stored(db)] == ["ok", "deep"]


async def test_unicode_text_and_ipv6_peers_round_trip(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """Non-ASCII text in the body and an IPv6 client address are stored exactly as sent."""
    running = await make_app(client_host="2001:db8::5")
    event = {"eventType": "café ☕", "siteId": "acme.com", "sessionId": "sess-😀", "eventData": {"q": "naïve ☃"}}
    assert (await running.post(event, headers={"user-agent": "Mozilla/5.0 (X11)"})).status_code == 200
    await running.services.buffer.drain()
    [row] = await stored(db)
    assert (row["event_type"], row["session_id"], row["event_data"]) == ("café ☕", "sess-😀", {"q": "naïve ☃"})
    assert (str(row["ip"]), row["user_agent"]) == ("2001:db8::5", "Mozilla/5.0 (X11)")


async def test_text_postgresql_cannot_store_rejects_only_that_event(running: Running, db: asyncpg.Connection) -> None:
    """A NUL character or a lone surrogate in a text field rejects that event; its neighbours are stored."""
    body = (
        b'{"eventType":"batch","siteId":"acme.com","events":['
        b'{"eventType":"ok"},{"eventType":"nul","sessionId":"a\\u0000b"},{"eventType":"lone\\ud800"},{"eventType":"ok2"}]}'
    )
    response = await running.client.post("/collect", content=body, headers={"content-type": "application/json"})
    if response.status_code == 400:
        # orjson refuses lone surrogates while parsing: the whole body is then invalid JSON, which is also fine.
        assert response.json()["error"] == "invalid_json"
        return
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["events_rejected"]] == [1, 2]
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await stored(db)] == ["ok", "ok2"]
