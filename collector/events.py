"""The /collect payload: JSON parsing, per-event validation, batch inheritance and COPY rows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID

from collector.errors import InvalidEvent, InvalidJson
from collector.sites import normalize_domain

# Column order of every row handed to COPY; the tuples built below follow it exactly.
COLUMNS = (
    "event_id", "event_type", "session_id", "visitor_id", "site_id", "client_id", "event_timestamp",
    "url", "path", "referrer", "user_agent", "ip", "ip_hash", "event_data", "extra", "received_at",
)  # fmt: skip
CLIENT_ID_COLUMN = COLUMNS.index("client_id")
# jsonb columns travel in PostgreSQL's binary format: this version byte, then the JSON text.
JSONB_VERSION = b"\x01"

MAX_JSON_DEPTH = 32
MAX_EVENT_TYPE_CHARS = 100
INHERITED = ("sessionId", "visitorId", "siteId", "url", "path", "referrer", "timestamp")
KNOWN_FIELDS = frozenset(("eventType", "eventId", "eventData", "events", *INHERITED))
SIMPLE_FIELDS = frozenset(("eventType", "eventId", "eventData"))
# Longest accepted value per text field; longer ones reject the event rather than truncating it silently.
TEXT_LIMITS = {
    "sessionId": 256, "visitorId": 256, "siteId": 253, "url": 8192, "path": 4096, "referrer": 8192,
}  # fmt: skip
ROW_TEXT_FIELDS = ("sessionId", "visitorId", "url", "path", "referrer")


class EventRejected(ValueError):
    """One event is invalid; the others in its request are unaffected."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per request
class RequestContext:
    """What the server knows of a request beyond its body, shared by every event in it."""

    site_id: str
    client_id: str
    user_agent: str | None
    ip: str | None
    ip_hash: str | None
    received_at: datetime


@dataclass(slots=True)
class _Defaults:
    """What each event of a request inherits unless it sets its own (a batch's wrapper fields)."""

    session_id: str | None
    visitor_id: str | None
    url: str | None
    path: str | None
    referrer: str | None
    timestamp: datetime
    extra: dict[str, Any]
    extra_json: bytes | None
    seen_timestamps: dict[str, datetime]

    @classmethod
    def none(cls, ctx: RequestContext) -> _Defaults:
        return cls(None, None, None, None, None, ctx.received_at, _NO_EXTRA, None, {})


_NO_EXTRA: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str


def parse_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or InvalidJson (400)."""
    if not body:
        raise InvalidJson("the body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if type(payload) is not dict:
        raise InvalidJson("the body must be a JSON object")
    # Fewer brackets than the limit cannot nest deeper than it. Past that, walking the whole tree costs more
    # than the rest of the request, so the depth is checked per value instead: on every eventData and unknown
    # field as it is serialized (see EventParser._json), and on anything rejected (see _check_depth).
    return payload


def _check_depth(value: Any, depth: int) -> None:
    """Raise InvalidJson (400) if `value`, standing at `depth` in the body (the root is 1), nests past the limit."""
    kind = type(value)
    if (kind is dict or kind is list) and _depth_exceeds(value, MAX_JSON_DEPTH - depth + 1):
        raise InvalidJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _depth_exceeds(root: Any, limit: int) -> bool:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


class EventParser:
    """Turns a parsed /collect payload into COPY rows, rejecting invalid events one by one."""

    def __init__(self, *, max_events_per_request: int, max_event_bytes: int) -> None:
        self.max_events_per_request = max_events_per_request
        self.max_event_bytes = max_event_bytes

    def events_of(self, payload: dict[str, Any]) -> list[Any]:
        """The events a payload carries: its `events` for a batch, else the payload itself."""
        if payload.get("eventType") != "batch":
            return [payload]
        events = payload.get("events")
        if type(events) is not list:
            _check_depth(events, 2)
            raise InvalidEvent("a batch needs an `events` array")
        if not events:
            raise InvalidEvent("the batch's `events` array is empty")
        if len(events) > self.max_events_per_request:
            raise InvalidEvent(
                f"the batch has {len(events)} events; at most {self.max_events_per_request} are accepted per request"
            )
        return events

    def domain_of(self, payload: dict[str, Any], events: list[Any]) -> str:
        """The domain to authorize: `siteId`, else the host of `url`; the wrapper's first, then the events'."""
        candidates = [payload] if events[0] is payload else [payload, *(e for e in events if type(e) is dict)]
        for source in candidates:
            site = source.get("siteId")
            if site is not None:
                if type(site) is not str or not (domain := normalize_domain(site)):
                    _check_depth(payload, 1)
                    raise InvalidEvent("`siteId` must be a domain name such as shop.example.com")
                return domain
            url = source.get("url")
            if type(url) is str and (host := _host_of(url)):
                return host
        _check_depth(payload, 1)
        raise InvalidEvent("no `siteId` (and no `url` to take the domain from)")

    def rows(
        self, payload: dict[str, Any], events: list[Any], ctx: RequestContext
    ) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
        """COPY rows for the valid events, and the index and reason of each invalid one."""
        is_batch = events[0] is not payload
        defaults = self._defaults(payload, ctx) if is_batch else _Defaults.none(ctx)
        event_depth = 3 if is_batch else 1
        rows: list[tuple[Any, ...]] = []
        rejected: list[Rejection] = []
        for index, event in enumerate(events):
            try:
                rows.append(self._row(event, is_batch, defaults, ctx))
            except EventRejected as exc:
                _check_depth(event, event_depth)  # what was rejected was never serialized, so never depth-checked
                rejected.append(Rejection(index, str(exc)))
        return rows, rejected

    def _defaults(self, wrapper: dict[str, Any], ctx: RequestContext) -> _Defaults:
        """The wrapper's inherited fields, validated once per request instead of once per event."""
        try:
            session, visitor, url, path, referrer = (_text(wrapper, name) for name in ROW_TEXT_FIELDS)
            timestamp = _timestamp(wrapper.get("timestamp"), ctx.received_at, {})
            extra = {k: v for k, v in wrapper.items() if k not in KNOWN_FIELDS}
            extra_json = self._json(extra, "unknown fields", 0) if extra else None
        except EventRejected as exc:
            _check_depth({k: v for k, v in wrapper.items() if k != "events"}, 1)
            raise InvalidEvent(f"the batch wrapper is invalid: {exc}") from None
        return _Defaults(session, visitor, url, path, referrer, timestamp, extra, extra_json, {})

    def _row(self, event: Any, is_batch: bool, d: _Defaults, ctx: RequestContext) -> tuple[Any, ...]:
        if type(event) is not dict:
            raise EventRejected("an event must be a JSON object")
        event_type = event.get("eventType")
        if type(event_type) is not str or not event_type:
            raise EventRejected("`eventType` is required and must be a non-empty string")
        if len(event_type) > MAX_EVENT_TYPE_CHARS or "\x00" in event_type:
            raise EventRejected(f"`eventType` must be at most {MAX_EVENT_TYPE_CHARS} characters")
        if event.keys() <= SIMPLE_FIELDS:
            # The usual batch sub-event: everything but its type, data and id comes from the wrapper.
            session, visitor, url, path, referrer = d.session_id, d.visitor_id, d.url, d.path, d.referrer
            timestamp, extra = d.timestamp, d.extra_json
        else:
            if is_batch:
                site = event.get("siteId")
                if site is not None and (type(site) is not str or normalize_domain(site) != ctx.site_id):
                    raise EventRejected(f"`siteId` differs from the request's domain {ctx.site_id}")
            session = _text(event, "sessionId", d.session_id)
            visitor = _text(event, "visitorId", d.visitor_id)
            url = _text(event, "url", d.url)
            path = _text(event, "path", d.path)
            referrer = _text(event, "referrer", d.referrer)
            raw_ts = event.get("timestamp")
            timestamp = d.timestamp if raw_ts is None else _timestamp(raw_ts, ctx.received_at, d.seen_timestamps)
            if event.keys() <= KNOWN_FIELDS:
                extra = d.extra_json
            else:
                own = {k: v for k, v in event.items() if k not in KNOWN_FIELDS}
                self._json(own, "unknown fields", 2 if is_batch else 0)
                extra = self._json({**d.extra, **own}, "unknown fields", 0)
        if is_batch and event_type == "batch":
            raise EventRejected("a batch may not contain another batch")
        data = event.get("eventData")
        if data is None:
            event_data = None
        elif type(data) is dict:
            event_data = self._json(data, "eventData", 3 if is_batch else 1)
        else:
            raise EventRejected("`eventData` must be a JSON object")
        given_id = event.get("eventId")
        return (
            _ids.take() if given_id is None else _event_id(given_id), event_type, session, visitor, ctx.site_id,
            ctx.client_id, timestamp, url, path, referrer, ctx.user_agent, ctx.ip, ctx.ip_hash, event_data, extra,
            ctx.received_at,
        )  # fmt: skip

    def _json(self, value: dict[str, Any], what: str, parent_depth: int) -> bytes:
        """`value` serialized for a jsonb column, checked for size, NUL and depth (its parent at `parent_depth`)."""
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise EventRejected(f"`{what}` cannot be stored: {exc}") from None
        # Nesting past the limit takes at least two bytes a level, so short values skip even the bracket count.
        room = MAX_JSON_DEPTH - parent_depth
        if len(encoded) > 2 * room and encoded.count(b"{") + encoded.count(b"[") > room:
            _check_depth(value, parent_depth + 1)
        if len(encoded) > self.max_event_bytes:
            raise EventRejected(f"`{what}` is {len(encoded)} bytes; at most {self.max_event_bytes} are accepted")
        # PostgreSQL's jsonb refuses the NUL character; catching it here keeps one event from failing a batch.
        if b"\\" in encoded and b"\\u0000" in encoded:
            raise EventRejected(f"`{what}` contains a NUL character")
        # Prefixing builds a right-sized copy: orjson's own result keeps a 4 KiB buffer, which, held in the
        # write-behind buffer per event, cost 400 MB per 100,000 events.
        return JSONB_VERSION + encoded


def _text(event: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = event.get(name)
    if value is None:
        return default
    if type(value) is not str:
        raise EventRejected(f"`{name}` must be a string")
    if len(value) > TEXT_LIMITS[name]:
        raise EventRejected(f"`{name}` is longer than {TEXT_LIMITS[name]} characters")
    if "\x00" in value:
        raise EventRejected(f"`{name}` contains a NUL character")
    return value


def _event_id(value: Any) -> PgUUID:
    if type(value) is not str:
        raise EventRejected("`eventId` must be a UUID string")
    try:
        return PgUUID(value)
    except ValueError:
        raise EventRejected("`eventId` must be a UUID") from None


# Byte maps that set the version (4) and variant (RFC 4122) bits of random UUIDs in C, not per byte in Python.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


class _RandomIds:
    """Random version-4 UUIDs cut from a pool refilled 4,096 at a time: a urandom syscall per event would cost
    more than building the rest of its row."""

    POOL = 4096

    def __init__(self) -> None:
        self._data = b""
        self._offset = 0

    def take(self) -> PgUUID:
        start = self._offset
        if start >= len(self._data):
            raw = bytearray(os.urandom(16 * self.POOL))
            raw[6::16] = raw[6::16].translate(_VERSION_4)
            raw[8::16] = raw[8::16].translate(_VARIANT)
            self._data, start = bytes(raw), 0
        self._offset = start + 16
        return PgUUID(self._data[start : start + 16])


_ids = _RandomIds()


def _timestamp(value: Any, received_at: datetime, seen: dict[str, datetime]) -> datetime:
    if value is None:
        return received_at
    if type(value) is not str:
        raise EventRejected("`timestamp` must be an ISO 8601 string")
    parsed = seen.get(value)
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise EventRejected(f"`timestamp` {value[:40]!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Outside this range a clock is broken, and near year 1 or 9999 the UTC conversion would overflow.
        if not 1970 <= parsed.year <= 2999:
            raise EventRejected(f"`timestamp` {value[:40]!r} is out of range")
        seen[value] = parsed
    return parsed


def _host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return normalize_domain(host) if host else None
