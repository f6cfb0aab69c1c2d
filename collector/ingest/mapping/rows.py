"""The direct encoders' shared parts: a mapped message encoded as its events_log COPY row, with no /collect dict.

A door used to map each message to a /collect event dict that EventParser then validated and encoded on its slow
path (a second validation, the timestamp printed as ISO text and parsed back, `extra` serialized twice): 2.5 x the
cost of the same rows sent to /collect. The mappers now encode each message's row straight from its fields, with
the encoders EventParser's fast path uses (copyformat's cached text, ROW_IDS.heads, one orjson.dumps per jsonb
field) and produce exactly the bytes EventParser would have produced for the mapped event.

Only what is certainly valid is encoded here. Anything EventParser might refuse or treat apart (a value of the
wrong type, too long, not encodable, nested deep, a NUL escape, a time out of range, a wrapper-sized page) raises
`Fallback`, and that message's group takes the /collect dict path (the mappers' `map_*`), whose rows and
refusals are /collect's by construction: rare cases cost what they cost before, and refusals never differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID

from collector.ingest.events import MAX_EVENT_TYPE_CHARS, TEXT_LIMITS, RequestContext, event_type_field
from collector.ingest.mapping.common import UUID_TEXT, event_id
from collector.ingest.payload import MAX_JSON_DEPTH
from collector.storage import copyformat
from collector.storage.copyformat import JSONB_HEADER, JSONB_VERSION, NULL, ROW_IDS, ROW_START_AND_UUID_LENGTH

# One encoded message: (site, address, User-Agent, its row but the request's columns, None); or, when its time is
# the receive time (known only once Ingest builds the request's context), (..., its row up to that time, `extra`).
# A tuple: a dataclass per event cost more.
Encoded = tuple[str | None, str | None, str | None, bytes, bytes | None]

_PG_EPOCH = copyformat.PG_EPOCH
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = copyformat.MICROSECOND
_TEN_YEARS_US = 3650 * 86_400 * 1_000_000  # mapping.common.skew_corrected's bound on a correction
_PG_EPOCH_UNIX_US = copyformat.PG_EPOCH_UNIX_US
_int64 = copyformat.int64
# EventParser accepts timestamps of the years 1970 to 2999 (in UTC): as microseconds since PostgreSQL's epoch.
_FIRST_US = (datetime(1970, 1, 1, tzinfo=UTC) - _PG_EPOCH) // _MICROSECOND
_END_US = (datetime(3000, 1, 1, tzinfo=UTC) - _PG_EPOCH) // _MICROSECOND
_DATA_ROOM = MAX_JSON_DEPTH - 3  # eventData stands at depth 3 in the batch a group was (a sub-event's field)
_EXTRA_ROOM = MAX_JSON_DEPTH - 2  # a sub-event's unknown fields at depth 2
SESSION, VISITOR, URL, PATH, REFERRER = (TEXT_LIMITS[n] for n in ("sessionId", "visitorId", "url", "path",
                                                                  "referrer"))  # fmt: skip
MAX_CACHED = copyformat.MAX_CACHED_TEXT_CHARS
_dumps = orjson.dumps
_JSONB_HEADER = JSONB_HEADER
# The jsonb field headers of JSON shorter than this, made once (a struct call per field cost a tenth of the field).
_SHORT_JSON = 4096
_HEADERS = [JSONB_HEADER(n + 1, JSONB_VERSION) for n in range(_SHORT_JSON)]  # ~160 KB


class Fallback(Exception):
    """The message is not certainly valid: its group takes the /collect dict path, which decides."""


class RowEncoder:
    """One request's encoding: the limits EventParser applies, the times already encoded (a batch's messages often
    share theirs: keyed by the raw values the time is derived from) and the text fields already encoded (a batch's
    messages repeat their visitor and page)."""

    __slots__ = ("max_bytes", "max_inherited", "max_keys", "middles", "plans", "received_us", "texts", "times")

    def __init__(self, max_bytes: int, max_keys: int, max_inherited: int) -> None:
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        self.max_inherited = max_inherited
        self.times: dict[Any, bytes | None] = {}
        self.texts: dict[str, bytes] = {}
        self.middles: dict[Any, Any] = {}  # a mapping's encoded page and visitor columns, by their raw values
        self.plans: dict[Any, Any] = {}  # a mapping's reading of a message shape (snowplow._plan)
        self.received_us: int | None = None  # the request's receive time in Unix microseconds, once a mapping asks

    def data(self, data: Any) -> bytes:
        """The eventData field (header and JSON): an object of at most MAX_EVENT_DATA_KEYS keys, or NULL."""
        if data is None:
            return NULL
        if type(data) is not dict or len(data) > self.max_keys:
            raise Fallback
        return self._jsonb(data, _DATA_ROOM)

    def extra(self, extra: dict[str, Any]) -> bytes:
        """The `extra` field of the message's unknown fields (NULL without any); the same checks as data's."""
        if not extra:
            return NULL
        return self._jsonb(extra, _EXTRA_ROOM)

    def _jsonb(self, value: dict[str, Any], room: int) -> bytes:
        """A jsonb field (header and JSON) of `value`, nested at most `room` levels below it; Fallback for what
        /collect might refuse (unserializable, over MAX_EVENT_BYTES, a NUL escape, too deep)."""
        try:
            encoded = _dumps(value)
        except orjson.JSONEncodeError:
            raise Fallback from None
        n = len(encoded)
        if n > self.max_bytes or b"\\u0000" in encoded or (n > 2 * room and _brackets(encoded) > room):
            raise Fallback
        return (_HEADERS[n] if n < _SHORT_JSON else _JSONB_HEADER(n + 1, JSONB_VERSION)) + encoded

    def columns(self, session: Any, visitor: Any, url: Any, path: Any, referrer: Any) -> bytes:
        """middle() of the five values as mapping.common.text() leaves them (a number as its text, "" as absent),
        each encoded as text() would be: one call for the five (a batch of many users and pages takes it for every
        message)."""
        texts, encoded = self.texts, []
        for value, limit, repeats in ((session, SESSION, True), (visitor, VISITOR, True), (url, URL, False),
                                      (path, PATH, True), (referrer, REFERRER, False)):  # fmt: skip
            kind = type(value)
            if kind is not str:
                if value is None:
                    encoded.append(NULL)
                    continue
                if kind is not int and kind is not float:
                    raise Fallback
                value = str(value)
            elif not value:
                encoded.append(NULL)
                continue
            if len(value) > limit:
                raise Fallback
            field = texts.get(value)
            if field is None:
                try:
                    encode = copyformat.cached_text if repeats and len(value) <= MAX_CACHED else copyformat.text
                    field = texts[value] = encode(value)
                except copyformat.Unencodable:
                    raise Fallback from None
            encoded.append(field)
        return self.middle(encoded)

    def middle(self, fields: Sequence[bytes]) -> bytes:
        """The five inherited text columns joined. Their size is held to MAX_INHERITED_BYTES as a group's shared
        fields are on /collect (Group.payload moves them to the batch wrapper): a larger set takes the dict path."""
        middle = b"".join(fields)
        if len(middle) + 16 > self.max_inherited:  # + the receive time (12 bytes) and a NULL extra
            raise Fallback
        return middle

    def corrected(self, occurred_us: int, sent_us: int, received: datetime) -> bytes:
        """timestamp() of mapping.common.skew_corrected(occurred, sent, received) in exact integer microseconds since
        the Unix epoch (a datetime per event cost more than the rest of its row): the device's time moved by the
        send's lag, unless that lands ten years or more from the receive time (a broken clock: its own time then)."""
        received_us = self.received_us
        if received_us is None:
            received_us = self.received_us = (received - _UNIX_EPOCH) // _MICROSECOND
        corrected = received_us - (sent_us - occurred_us)
        return timestamp_us(corrected if abs(corrected - received_us) < _TEN_YEARS_US else occurred_us)


def event_type(value: Any) -> bytes:
    """The eventType field: a non-empty string of at most 100 characters, not `batch`, not only whitespace."""
    if type(value) is not str or not value or len(value) > MAX_EVENT_TYPE_CHARS or value == "batch":
        raise Fallback
    try:
        return event_type_field(value)
    except copyformat.Unencodable:
        raise Fallback from None


def event_head(protocol: str, given: Any) -> bytes:
    """The row's start and event id: a protocol's message id given as a UUID's text (the usual case, checked here
    without a call), else mapping.common.event_id's (uuid5 of another id; MappingRejected for an unusable one), else
    a random one."""
    if type(given) is not str or len(given) != 36 or not UUID_TEXT.fullmatch(given):
        given = event_id(protocol, given)
        if given is None:
            heads = ROW_IDS.heads
            return heads.pop() if heads else ROW_IDS.take()
    return ROW_START_AND_UUID_LENGTH + PgUUID(given).bytes


def timestamp(value: datetime | None) -> bytes | None:
    """The event_timestamp field of a derived time, as /collect stores its ISO text at millisecond precision
    (mapping.common.iso), straight from the datetime; None for no time (the receive time is stored)."""
    return None if value is None else _millis_field((value - _PG_EPOCH) // _MICROSECOND)


def timestamp_us(unix_us: int) -> bytes:
    """timestamp() of a time given in microseconds since the Unix epoch (exact integer arithmetic, no datetime)."""
    return _millis_field(unix_us - _PG_EPOCH_UNIX_US)


def _millis_field(pg_us: int) -> bytes:
    """The field of a time in microseconds since PostgreSQL's epoch, cut to the millisecond as
    isoformat(timespec="milliseconds") cuts it; Fallback outside the years /collect accepts."""
    pg_us -= pg_us % 1000
    if not _FIRST_US <= pg_us < _END_US:
        raise Fallback
    return copyformat.TIMESTAMP_LENGTH + _int64(pg_us)


def _brackets(encoded: bytes) -> int:
    return encoded.count(b"{") + encoded.count(b"[")


@dataclass(slots=True)
class DirectGroup:
    """A group's encoded messages (one Ingest call: one site, address and agent), and their request indexes."""

    domain: str
    ip: str | None
    user_agent: str | None
    encoded: list[Encoded] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    def rows(self, ctx: RequestContext) -> list[bytes]:
        """The COPY rows, once Ingest knows the request's columns and receive time."""
        join, received, tail = b"".join, ctx.received, ctx.tail
        return [e[3] + tail if e[4] is None else join((e[3], received, e[4], tail)) for e in self.encoded]
