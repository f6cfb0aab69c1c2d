"""The /collect payload: JSON parsing, per-event validation, batch inheritance and COPY rows."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from collector.errors import InvalidEvent, InvalidJson
from collector.sites import normalize_domain

# Column order of every row handed to COPY; the tuples built below follow it exactly.
COLUMNS = (
    "event_id", "event_type", "session_id", "visitor_id", "site_id", "client_id", "event_timestamp",
    "url", "path", "referrer", "user_agent", "ip", "ip_hash", "event_data", "extra", "received_at",
)  # fmt: skip
CLIENT_ID_COLUMN = COLUMNS.index("client_id")

MAX_JSON_DEPTH = 32
MAX_EVENT_TYPE_CHARS = 100
INHERITED = ("sessionId", "visitorId", "siteId", "url", "path", "referrer", "timestamp")
KNOWN_FIELDS = frozenset(("eventType", "eventId", "eventData", "events", *INHERITED))
# Longest accepted value per text field; longer ones reject the event rather than truncating it silently.
TEXT_LIMITS = {
    "sessionId": 256, "visitorId": 256, "siteId": 253, "url": 8192, "path": 4096, "referrer": 8192,
}  # fmt: skip
ROW_TEXT_FIELDS = ("sessionId", "visitorId", "url", "path", "referrer")


class EventRejected(ValueError):
    """One event is invalid; the others in its request are unaffected."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the server knows of a request beyond its body, shared by every event in it."""

    site_id: str
    client_id: str
    user_agent: str | None
    ip: str | None
    ip_hash: str | None
    received_at: datetime


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
    # A cheap upper bound first: fewer brackets than the limit cannot nest deeper than it.
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and _depth_exceeds(payload, MAX_JSON_DEPTH):
        raise InvalidJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return payload


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
                    raise InvalidEvent("`siteId` must be a domain name such as shop.example.com")
                return domain
            url = source.get("url")
            if type(url) is str and (host := _host_of(url)):
                return host
        raise InvalidEvent("no `siteId` (and no `url` to take the domain from)")

    def rows(
        self, payload: dict[str, Any], events: list[Any], ctx: RequestContext
    ) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
        """COPY rows for the valid events, and the index and reason of each invalid one."""
        rows: list[tuple[Any, ...]] = []
        rejected: list[Rejection] = []
        is_batch = events[0] is not payload
        inherited: dict[str, Any] = {}
        extra_base: dict[str, Any] = {}
        if is_batch:
            inherited = {k: payload[k] for k in INHERITED if payload.get(k) is not None}
            extra_base = {k: v for k, v in payload.items() if k not in KNOWN_FIELDS}
        timestamps: dict[str, datetime] = {}
        for index, event in enumerate(events):
            try:
                rows.append(self._row(event, is_batch, inherited, extra_base, ctx, timestamps))
            except EventRejected as exc:
                rejected.append(Rejection(index, str(exc)))
        return rows, rejected

    def _row(
        self,
        event: Any,
        is_batch: bool,
        inherited: dict[str, Any],
        extra_base: dict[str, Any],
        ctx: RequestContext,
        timestamps: dict[str, datetime],
    ) -> tuple[Any, ...]:
        if type(event) is not dict:
            raise EventRejected("an event must be a JSON object")
        event_type = event.get("eventType")
        if type(event_type) is not str or not event_type:
            raise EventRejected("`eventType` is required and must be a non-empty string")
        if len(event_type) > MAX_EVENT_TYPE_CHARS or "\x00" in event_type:
            raise EventRejected(f"`eventType` must be at most {MAX_EVENT_TYPE_CHARS} characters")
        if is_batch:
            if event_type == "batch":
                raise EventRejected("a batch may not contain another batch")
            if inherited:
                event = {**inherited, **{k: v for k, v in event.items() if v is not None}}
        site = event.get("siteId")
        if site is not None and (type(site) is not str or normalize_domain(site) != ctx.site_id):
            raise EventRejected(f"`siteId` differs from the request's domain {ctx.site_id}")
        text = [_text(event, name) for name in ROW_TEXT_FIELDS]
        data = event.get("eventData")
        if data is None:
            event_data = None
        elif type(data) is dict:
            event_data = self._json(data, "eventData")
        else:
            raise EventRejected("`eventData` must be a JSON object")
        unknown = event.keys() - KNOWN_FIELDS
        if unknown or extra_base:
            extra_fields = {**extra_base, **{k: event[k] for k in unknown}}
            extra = self._json(extra_fields, "unknown fields") if extra_fields else None
        else:
            extra = None
        return (
            _event_id(event.get("eventId")), event_type, text[0], text[1], ctx.site_id, ctx.client_id,
            _timestamp(event.get("timestamp"), ctx.received_at, timestamps),
            text[2], text[3], text[4], ctx.user_agent, ctx.ip, ctx.ip_hash, event_data, extra, ctx.received_at,
        )  # fmt: skip

    def _json(self, value: dict[str, Any], what: str) -> bytes:
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise EventRejected(f"`{what}` cannot be stored: {exc}") from None
        if len(encoded) > self.max_event_bytes:
            raise EventRejected(f"`{what}` is {len(encoded)} bytes; at most {self.max_event_bytes} are accepted")
        # PostgreSQL's jsonb refuses the NUL character; catching it here keeps one event from failing a batch.
        if b"\\u0000" in encoded:
            raise EventRejected(f"`{what}` contains a NUL character")
        return encoded


def _text(event: dict[str, Any], name: str) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise EventRejected(f"`{name}` must be a string")
    if len(value) > TEXT_LIMITS[name]:
        raise EventRejected(f"`{name}` is longer than {TEXT_LIMITS[name]} characters")
    if "\x00" in value:
        raise EventRejected(f"`{name}` contains a NUL character")
    return value


def _event_id(value: Any) -> uuid.UUID:
    if value is None:
        return uuid.UUID(bytes=os.urandom(16), version=4)
    if type(value) is not str:
        raise EventRejected("`eventId` must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise EventRejected("`eventId` must be a UUID") from None


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
