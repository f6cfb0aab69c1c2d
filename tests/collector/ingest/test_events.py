"""EventParser's encoding: the batch fast path agrees with the full path, and refuses what the full path refuses."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from collector.errors import InvalidJson
from collector.ingest import events as ev
from collector.ingest.payload import parse_body
from collector.storage import copyformat

PARSER = ev.EventParser(max_events_per_request=500, max_event_bytes=2048)
WRAPPER = {"eventType": "batch", "siteId": "acme.com", "sessionId": "s1", "url": "https://acme.com/"}


CTX = ev.RequestContext.build("acme.com", "client_acme_corp", "agent", "198.51.100.1", None)


def encode(sub_events: list[Any]) -> tuple[list[bytes], list[ev.Rejection]]:
    payload = parse_body(orjson.dumps({**WRAPPER, "events": sub_events}))
    return PARSER.rows(payload, PARSER.events_of(payload), CTX)


def full_path(sub_event: dict[str, Any]) -> bytes:
    """The same sub-event through EventParser._row, the path every other event takes."""
    payload = parse_body(orjson.dumps({**WRAPPER, "events": [sub_event]}))
    return PARSER._row(payload["events"][0], True, PARSER._defaults(payload, CTX), CTX)


def without_id(row: bytes) -> bytes:
    return row[:6] + row[22:]


@pytest.mark.parametrize(
    "sub_event",
    [
        {"eventType": "click", "eventData": {"element": "button1"}},
        {"eventType": "scroll", "eventData": {}},
        {"eventType": "form_focus", "eventData": {"field": "émail ✓", "n": [1, 2, {"x": None}]}},
        {"eventType": "t" * 100, "eventData": {"k": "v" * 1000}},
        {"eventType": "escaped", "eventData": {"k": "a backslash \\ and the text \\u0000, not a NUL"}},
    ],
)
def test_fast_path_rows_equal_the_full_paths(sub_event: dict[str, Any]) -> None:
    """A usual sub-event is encoded byte for byte as _row would encode it (but for its random id)."""
    rows, rejected = encode([sub_event])
    assert rejected == []
    assert without_id(rows[0]) == without_id(full_path(sub_event))


@pytest.mark.parametrize(
    "sub_event",
    [
        {"eventType": "batch", "eventData": {}},
        {"eventType": "nul", "eventData": {"k": "a\u0000b"}},
        {"eventType": "big", "eventData": {"k": "v" * 3000}},
        {"eventType": "many_keys", "eventData": {f"k{i}": i for i in range(101)}},
        {"eventType": "", "eventData": {}},
        {"eventType": "   ", "eventData": {}},
        {"eventType": "\u2003", "eventData": {}},
        {"eventType": "x" * 101, "eventData": {}},
    ],
)
def test_fast_path_leaves_what_it_cannot_store_to_the_full_checks(sub_event: dict[str, Any]) -> None:
    """Sub-events the full path rejects are rejected with a reason, and the valid one beside them is kept."""
    rows, rejected = encode([sub_event, {"eventType": "ok", "eventData": {"a": 1}}])
    assert len(rows) == 1 and [r.index for r in rejected] == [0] and rejected[0].error


def test_eventdata_nested_past_the_limit_in_a_batch_fails_the_request() -> None:
    """Depth is checked on the fast path too: eventData nesting past 32 levels of the body is a 400."""
    deep: Any = {}
    for _ in range(30):
        deep = {"d": deep}
    with pytest.raises(InvalidJson):
        encode([{"eventType": "deep", "eventData": deep}])
    shallow: Any = {}
    for _ in range(28):
        shallow = {"d": shallow}
    rows, rejected = encode([{"eventType": "ok", "eventData": shallow}])
    assert len(rows) == 1 and rejected == []


def test_generated_event_ids_are_distinct_version_4_uuids_across_pool_refills() -> None:
    """Ids cut from the random pool are unique, RFC 4122 version 4, behind the row's field count."""
    heads = [copyformat.row_head() for _ in range(copyformat.RandomIds.POOL * 2 + 10)]
    assert len(set(heads)) == len(heads)
    assert {h[:6] for h in heads} == {ev.ROW_START_AND_UUID_LENGTH}
    ids = [uuid.UUID(bytes=h[6:]) for h in heads]
    assert {(u.version, u.variant) for u in ids} == {(4, uuid.RFC_4122)}
