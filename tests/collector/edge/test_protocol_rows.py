"""The front doors' direct row encoders (collector.ingest.mapping.rows) against the path they replace: each door's
mapping to /collect events, validated and encoded by /collect's EventParser. For every request of door_corpus, the
same bytes, the same stored rows, the same answers, counts and dead letters."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from collector.edge.protocols.segment import PATHS as SEGMENT_PATHS
from collector.errors import CollectorError
from collector.ingest.events import EventParser, RequestContext
from collector.ingest.mapping import plausible, segment, snowplow
from collector.ingest.mapping.common import Group, Mapped, MappingRejected, event_id
from collector.ingest.mapping.rows import DirectGroup, Encoded, Fallback, RowEncoder
from collector.settings import Settings
from collector.storage.copyformat import ROW_START_AND_UUID_LENGTH
from tests.collector.edge import door_corpus
from tests.collector.edge.door_corpus import KEY
from tests.conftest import MakeApp, Running, wait_for_rows
from tests.pixel_management import PixelManagement, site_config

RECEIVED = datetime(2026, 3, 1, 10, 0, 7, 654321, tzinfo=UTC)
SETTINGS = Settings()
PARSER = EventParser(
    max_events_per_request=SETTINGS.max_events_per_request, max_event_bytes=SETTINGS.max_event_bytes,
    max_event_data_keys=SETTINGS.max_event_data_keys, max_inherited_bytes=SETTINGS.max_inherited_bytes,
)  # fmt: skip
ID_START = len(ROW_START_AND_UUID_LENGTH)
TP2 = "/com.snowplowanalytics.snowplow/tp2"
# Columns compared apart (event_id, event_timestamp) or that differ between any two requests (the row's serial, its
# transaction, the receive time).
DERIVED_TIME = re.compile(r'"timestamp":"[0-9T:.+-]+"')
UNCOMPARED = frozenset(("id", "xact_id", "received_at", "event_id", "event_timestamp"))


def _encoder() -> RowEncoder:
    return RowEncoder(SETTINGS.max_event_bytes, SETTINGS.max_event_data_keys, SETTINGS.max_inherited_bytes)


def _masked(row: bytes, given: bool) -> bytes:
    """The row with its event id blanked when the collector drew it (no id given)."""
    return row if given else row[:ID_START] + bytes(16) + row[ID_START + 16 :]


def _compare_request(
    messages: list[Any], encode: Callable[[Any, RowEncoder], Encoded], mapper: Callable[[Any], Mapped]
) -> Counter[str]:
    """Encode one request's messages directly and through the /collect path; assert each group of encoded messages
    has the same rows, and each refused message the same refusal. How the messages went, counted."""
    outcomes: Counter[str] = Counter()
    enc = _encoder()
    groups: dict[tuple[Any, ...], list[tuple[Encoded | None, Mapped]]] = {}
    for message in messages:
        try:
            encoded: Encoded | None = encode(message, enc)
        except MappingRejected as exc:
            with pytest.raises(MappingRejected) as refused:
                mapper(message)
            assert str(refused.value) == str(exc)
            outcomes["refused alike"] += 1
            continue
        except Fallback:
            encoded = None
        m = mapper(message)
        key = (m.domain, m.ip, m.user_agent)
        assert encoded is None or encoded[:3] == key
        groups.setdefault(key, []).append((encoded, m))
    for (domain, ip, agent), members in groups.items():
        if domain is None or any(e is None for e, _ in members):
            outcomes["/collect path"] += len(members)
            continue
        ctx = RequestContext.build(domain, "client_x", agent, ip, None)
        payload = Group(domain, ip, agent, [m.event for _, m in members]).payload()
        try:
            expected, rejections = PARSER.rows(payload, PARSER.events_of(payload), ctx)
        except CollectorError as exc:
            raise AssertionError(f"/collect refused a group the encoder took: {exc.detail}") from None
        assert not rejections, (rejections, [m.event for _, m in members])
        direct = DirectGroup(domain, ip, agent, [e for e, _ in members if e is not None]).rows(ctx)
        given = ["eventId" in m.event for _, m in members]
        assert [_masked(r, g) for r, g in zip(direct, given, strict=True)] == [
            _masked(r, g) for r, g in zip(expected, given, strict=True)
        ], [m.event for _, m in members]
        outcomes["encoded, same bytes"] += len(members)
    return outcomes


def test_segment_rows_encoded_directly_are_the_bytes_the_collect_path_encodes() -> None:
    """Every Segment message of the corpus: the same COPY bytes as its mapped /collect batch, or the same refusal."""
    outcomes: Counter[str] = Counter()
    for path, body in door_corpus.segment_requests():
        try:
            messages = segment.messages_of(body, SEGMENT_PATHS[path], 500) if type(body) is dict else None
        except CollectorError:
            messages = None
        if messages is None:
            continue
        outcomes += _compare_request(
            messages, lambda m, enc: segment.encode_message(enc, RECEIVED, "acme.com", m),
            lambda m: segment.map_message(m, RECEIVED, "acme.com"),
        )  # fmt: skip
    assert outcomes["encoded, same bytes"] > 200 and outcomes["/collect path"] > 20 and outcomes["refused alike"]


def test_snowplow_rows_encoded_directly_are_the_bytes_the_collect_path_encodes() -> None:
    """Every Snowplow event of the corpus (POST and GET): the same COPY bytes, or the same refusal."""
    outcomes: Counter[str] = Counter()
    bodies = door_corpus.snowplow_requests()
    requests = [body["data"] for body in bodies if type(body.get("data")) is list] + [
        [query] for query in door_corpus.snowplow_queries()
    ]
    for events in requests:
        outcomes += _compare_request(
            events, lambda e, enc: snowplow.encode_event(enc, RECEIVED, e), lambda e: snowplow.map_event(e, RECEIVED)
        )
    assert outcomes["encoded, same bytes"] > 100 and outcomes["/collect path"] > 20 and outcomes["refused alike"]


def test_plausible_rows_encoded_directly_are_the_bytes_the_collect_path_encodes() -> None:
    """Every Plausible body of the corpus: one row per site with the same bytes, or the same refusal."""
    taken = 0
    for body in door_corpus.plausible_requests():
        try:
            mapped = plausible.map_event(body) if type(body) is dict else None
        except CollectorError as exc:
            with pytest.raises(CollectorError) as refused:
                plausible.encode_event(body, _encoder())
            assert refused.value.detail == exc.detail
            continue
        if mapped is None:
            continue
        try:
            encoded = plausible.encode_event(body, _encoder())
        except Fallback:
            continue
        for e, m in zip(encoded, mapped, strict=True):
            assert m.domain is not None and e[:3] == (m.domain, None, None)
            ctx = RequestContext.build(m.domain, "client_x", "UA", "192.0.2.1", None)
            payload = Group(m.domain, None, None, [m.event]).payload()
            expected, rejections = PARSER.rows(payload, PARSER.events_of(payload), ctx)
            assert not rejections
            assert [_masked(r, False) for r in DirectGroup(m.domain, None, None, [e]).rows(ctx)] == [
                _masked(r, False) for r in expected
            ]
            taken += 1
    assert taken > 50


@pytest.fixture
async def app(make_app: MakeApp, pixel: PixelManagement) -> Running:
    """A collector acking after the commit (each answer's rows are in the table when it comes), knowing the corpus's
    sites: the conftest's, one with cookieless ids and one that keeps no ids without consent."""
    pixel.domains["cookieless.com"] = site_config("client_cookieless", features={"cookieless": True})
    pixel.domains["opt-in.com"] = site_config("client_opt_in", consent={"required": True, "default_behavior": "opt_in"})
    pixel.write_keys[KEY] = "acme.com"
    return await make_app(ack_mode="durable")


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in UNCOMPARED}


async def _outcome(app: Running, db: asyncpg.Connection, send: Callable[[], Awaitable[httpx.Response]]) -> Any:
    """What one request came to: its answer, the counts it moved, its dead letters and its stored rows."""
    ingest = app.services.ingest
    rejected, accepted = Counter(ingest.rejected), ingest.accepted
    last_row = await db.fetchval("SELECT coalesce(max(id), 0) FROM events_log")
    last_letter = await db.fetchval("SELECT coalesce(max(id), 0) FROM dead_letters")
    response = await send()
    await app.services.accounting.flush()
    rows = await db.fetch("SELECT * FROM events_log WHERE id > $1 ORDER BY id", last_row)
    letters = await db.fetch(
        "SELECT reason, client_id, domain, detail, payload FROM dead_letters WHERE id > $1 ORDER BY id", last_letter
    )
    # A sampled event's derived timestamp (a /collect path sample) moves with the receive time: compared without it.
    letters = [(*r[:4], DERIVED_TIME.sub("", r[4])) for r in letters]
    headers = {k: v for k, v in response.headers.items() if k.startswith("x-collector") or k == "content-type"}
    answer = (response.status_code, response.content, headers, ingest.rejected - rejected, ingest.accepted - accepted)
    return answer, letters, rows


def _given_ids(body: Any) -> set[Any]:
    """The event ids a request's messages give (messageId, eid), as the mappings derive them."""
    found: set[Any] = set()
    if type(body) is list:
        for value in body:
            found |= _given_ids(value)
    elif type(body) is dict:
        for name, value in body.items():
            if name in ("messageId", "eid"):
                try:
                    given = event_id("segment" if name == "messageId" else "snowplow", value)
                except MappingRejected:
                    continue
                if given is not None:
                    found.add(uuid.UUID(given))
            found |= _given_ids(value)
    return found


def _same_rows(direct: list[asyncpg.Record], reference: list[asyncpg.Record], given: set[Any]) -> None:
    """Row for row the same columns; the same event id where the message gave one (`given`), a new one elsewhere;
    the same event time, or (one derived from the receive time) the same distance from it."""
    assert [_row(r) for r in direct] == [_row(r) for r in reference]
    for d, r in zip(direct, reference, strict=True):
        assert d["event_id"] == r["event_id"] if r["event_id"] in given else d["event_id"] not in given
        offset = (d["event_timestamp"] - d["received_at"]) - (r["event_timestamp"] - r["received_at"])
        assert d["event_timestamp"] == r["event_timestamp"] or abs(offset) < timedelta(milliseconds=200)


async def test_each_door_stores_answers_and_counts_what_the_collect_path_did_for_every_corpus_request(
    app: Running, db: asyncpg.Connection
) -> None:
    """Every corpus request twice, through the direct encoders and through the /collect path: the same answer,
    rejection counts, dead letters and stored rows (real PostgreSQL, the real app)."""
    doors = set(app.services.doors.values())
    client = app.client
    sends: list[tuple[Any, Callable[[], Awaitable[httpx.Response]]]] = []
    for path, body in door_corpus.segment_requests():
        sends.append((body, lambda p=path, b=body: client.post(p, content=json.dumps(b).encode(), auth=(KEY, ""))))
    for body in door_corpus.snowplow_requests():
        sends.append((body, lambda b=body: client.post(TP2, content=json.dumps(b).encode())))
    for query in door_corpus.snowplow_queries():
        sends.append((query, lambda q=query: client.get("/i", params=q)))
    for body in door_corpus.plausible_requests():
        sends.append((body, lambda b=body: client.post("/api/event", content=json.dumps(b).encode())))
    stored, sites = 0, set()
    for body, send in sends:
        outcomes = []
        for encodes in (True, False):
            for door in doors:
                door.encodes = encodes
            outcomes.append(await _outcome(app, db, send))
        (answer, letters, rows), (reference_answer, reference_letters, reference_rows) = outcomes
        assert answer == reference_answer
        assert letters == reference_letters
        _same_rows(rows, reference_rows, _given_ids(body))
        stored += len(rows)
        sites.update(r["site_id"] for r in rows)
    assert stored > 300
    # The consent fallback inside Ingest (cookieless ids, no ids without consent) and the IP rules were exercised.
    assert {"cookieless.com", "opt-in.com", "eu-shop.com", "no-ip.com", "shop.acme.com"} <= sites


async def test_a_full_buffer_refuses_a_doors_encoded_rows_as_it_refuses_the_collect_paths(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """PostgreSQL away and the journal full: a tp2 batch that does not fit answers 503 buffer_full with Retry-After
    and counts its events, through the encoders exactly as through the /collect path."""
    running = await make_app(buffer_max_events=3, flush_max_events=3, flush_interval_ms=10, journal_max_bytes=1)
    ingest, doors = running.services.ingest, set(running.services.doors.values())
    await db.execute("ALTER TABLE events_log RENAME TO events_log_away")
    try:
        filler = {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "a"}] * 2}
        assert (await running.post(filler)).status_code == 200
        outcomes = []
        for encodes in (True, False):
            for door in doors:
                door.encodes = encodes
            before = ingest.rejected["buffer_full"]
            body = {
                "schema": door_corpus.SCHEMA,
                "data": [{"e": "pv", "aid": "acme.com", "url": "https://acme.com/a"}] * 2,
            }
            response = await running.client.post(TP2, json=body)
            outcomes.append((response.status_code, response.json()["error"], "retry-after" in response.headers,
                             ingest.rejected["buffer_full"] - before))  # fmt: skip
    finally:
        await db.execute("ALTER TABLE events_log_away RENAME TO events_log")
    assert outcomes == [(503, "buffer_full", True, 2)] * 2
    await wait_for_rows(db, 2, timeout_s=15)
