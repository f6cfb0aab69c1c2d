"""The /collect payload: JSON parsing, per-event validation, batch inheritance and COPY rows."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any
from urllib.parse import urlsplit

import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID

from collector.errors import InvalidEvent, InvalidSite, RequestRowsTooLarge
from collector.ingest.payload import MAX_JSON_DEPTH, check_depth
from collector.ingest.sites import normalize_domain
from collector.storage import copyformat
from collector.storage.copyformat import ROW_IDS, row_head

ROW_START_AND_UUID_LENGTH = copyformat.ROW_START_AND_UUID_LENGTH
JSONB_VERSION = copyformat.JSONB_VERSION
_JSONB_HEADER = copyformat.JSONB_HEADER
TIMESTAMP_FIELD = copyformat.INHERITED_COLUMNS.index("event_timestamp")
EXTRA_FIELD = copyformat.INHERITED_COLUMNS.index("extra")

MAX_EVENT_TYPE_CHARS = 100
INHERITED = ("sessionId", "visitorId", "siteId", "url", "path", "referrer", "timestamp")
# `consent` and `webdriver` are the request's (read by ingest: collector.ingest.consent, and the automation flag the
# tracker sends), never stored as unknown fields.
REQUEST_FIELDS = ("consent", "webdriver")
KNOWN_FIELDS = frozenset(("eventType", "eventId", "eventData", "events", *INHERITED, *REQUEST_FIELDS))
SIMPLE_FIELDS = frozenset(("eventType", "eventId", "eventData"))
BATCH_FAST_FIELDS = frozenset(("eventType", "eventData"))
# Longest accepted value per text field; longer ones reject the event rather than truncating it silently.
TEXT_LIMITS = {
    "sessionId": 256, "visitorId": 256, "siteId": 253, "url": 8192, "path": 4096, "referrer": 8192,
}  # fmt: skip
ROW_TEXT_FIELDS = ("sessionId", "visitorId", "url", "path", "referrer")
UNCACHED_FIELDS = frozenset(("url", "referrer"))  # nearly unique values: caching them would only churn
# A User-Agent is stored (and cached) cut to this many characters: the header may be 32 KiB.
MAX_USER_AGENT_CHARS = 512
SITE_ID_RULE = (
    "`siteId` must be a host name such as shop.example.com (labels of letters, digits and hyphens, at most 63"
    " bytes each and 253 in all) or an IP address"
)


# A \u0000 escape not itself escaped (`\\u0000` is a backslash and the text "u0000", which jsonb takes).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class EventRejected(ValueError):
    """One event is invalid; the others in its request are unaffected. `error` is the code it is counted under."""

    def __init__(self, detail: str, error: str = "invalid_event") -> None:
        super().__init__(detail)
        self.error = error


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per request
class RequestContext:
    """What the server knows of a request beyond its body, shared by every event in it."""

    site_id: str
    client_id: str
    received_ns: int  # time.time_ns() when the request was read
    received: bytes  # the same, as an encoded timestamptz field
    # site_id, client_id, user_agent, ip, ip_hash, consent, the enrichment columns as NULLs (filled on storage's
    # thread: collector.enrich) and received_at, encoded once for all the request's rows.
    tail: bytes
    user_agent: str | None  # cut to MAX_USER_AGENT_CHARS: what the enricher reads (the header may be 32 KiB)

    @classmethod
    def build(
        cls,
        site_id: str,
        client_id: str,
        user_agent: str | None,
        ip: str | None,
        ip_hash: str | None,
        consent: str = "unknown",
    ) -> RequestContext:
        received_ns = time.time_ns()
        received = copyformat.timestamp_ns(received_ns)
        if user_agent is not None and len(user_agent) > MAX_USER_AGENT_CHARS:
            user_agent = user_agent[:MAX_USER_AGENT_CHARS]  # real agents are ~100-300 characters
        tail = _request_fields(site_id, client_id, user_agent, ip, ip_hash, consent) + received
        return cls(site_id, client_id, received_ns, received, tail, user_agent)


# Keyed by (site, client, agent, ip, ip hash, consent), each bounded (253, 128, MAX_USER_AGENT_CHARS, 45, 64, 7
# characters): with the encoded value, at most ~4,096 x 3 KB = 12 MB.
@lru_cache(maxsize=4096)
def _request_fields(
    site_id: str, client_id: str, user_agent: str | None, ip: str | None, ip_hash: str | None, consent: str
) -> bytes:
    """The per-request columns but the receive time, encoded; the same client sends many requests."""
    try:
        agent = copyformat.text(user_agent)
    except copyformat.Unencodable:
        agent = copyformat.NULL  # a header we cannot store is no reason to refuse the events
    return b"".join((
        copyformat.text(site_id), copyformat.text(client_id), agent,
        copyformat.NULL if ip is None else copyformat.inet(ip), copyformat.text(ip_hash),
        copyformat.text(consent), copyformat.ENRICH_NULLS,
    ))  # fmt: skip


@dataclass(slots=True)
class _Defaults:
    """What each event of a request inherits unless it sets its own (a batch's wrapper fields), encoded."""

    fields: list[bytes]  # copyformat.INHERITED_COLUMNS, each encoded
    middle: bytes  # the same, joined: the whole middle of a sub-event that sets none of them
    extra: dict[str, Any]
    seen_timestamps: dict[str, bytes]

    @classmethod
    def none(cls, ctx: RequestContext) -> _Defaults:
        fields = [*_FIVE_NULLS, ctx.received, copyformat.NULL]
        return cls(fields, _FIVE_NULLS_JOINED + ctx.received + copyformat.NULL, _NO_EXTRA, {})


_NO_EXTRA: dict[str, Any] = {}
_FIVE_NULLS = (copyformat.NULL,) * 5
_FIVE_NULLS_JOINED = b"".join(_FIVE_NULLS)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str  # the detail, as the response lists it
    code: str = "invalid_event"  # what it is counted under


class EventParser:
    """Turns a parsed /collect payload into COPY rows, rejecting invalid events one by one."""

    def __init__(
        self,
        *,
        max_events_per_request: int,
        max_event_bytes: int,
        max_event_data_keys: int = 100,
        max_inherited_bytes: int = 16 * 1024,
    ) -> None:
        self.max_events_per_request = max_events_per_request
        self.max_event_bytes = max_event_bytes
        self.max_event_data_keys = max_event_data_keys
        self.max_inherited_bytes = max_inherited_bytes

    def events_of(self, payload: dict[str, Any]) -> list[Any]:
        """The events a payload carries: its `events` for a batch, else the payload itself."""
        if payload.get("eventType") != "batch":
            return [payload]
        events = payload.get("events")
        if type(events) is not list:
            check_depth(events, 2)
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
        # Lazily: a batch's wrapper usually names the site, and the events need not be looked at.
        candidates = (payload,) if events[0] is payload else chain((payload,), events)
        for source in candidates:
            if type(source) is not dict:
                continue
            site = source.get("siteId")
            if site is not None:
                if type(site) is not str or not (domain := normalize_domain(site)):
                    check_depth(payload, 1)
                    raise InvalidSite(SITE_ID_RULE)
                return domain
            url = source.get("url")
            if type(url) is str and (host := _host_of(url)):
                return host
        check_depth(payload, 1)
        raise InvalidEvent("no `siteId` (and no `url` to take the domain from)")

    def rows(
        self, payload: dict[str, Any], events: list[Any], ctx: RequestContext
    ) -> tuple[list[bytes], list[Rejection]]:
        """COPY records (copyformat) for the valid events, and the index and reason of each invalid one."""
        is_batch = events[0] is not payload
        defaults = self._defaults(payload, ctx) if is_batch else _Defaults.none(ctx)
        event_depth = 3 if is_batch else 1
        rows: list[bytes] = []
        rejected: list[Rejection] = []
        # The usual batch sub-event ({eventType, eventData}, inheriting the rest) is encoded right here, with no call
        # of ours: per event, calling _row and _json cost more than their work. What this path does not take on
        # (its own fields or id, a long or escaped eventData, an odd type) goes to _row, which checks it in full.
        fast = is_batch
        room, limit, max_keys = MAX_JSON_DEPTH - 3, self.max_event_bytes, self.max_event_data_keys
        middle, tail = defaults.middle, ctx.tail
        dumps, join, text, jsonb_header = orjson.dumps, b"".join, event_type_field, _JSONB_HEADER
        heads = ROW_IDS.heads  # popped here directly: a call of ours per event would cost as much as the pop saves
        version = JSONB_VERSION
        for index, event in enumerate(events):
            if fast and type(event) is dict and event.keys() <= BATCH_FAST_FIELDS:
                event_type, data = event.get("eventType"), event.get("eventData")
                if (
                    type(event_type) is str and type(data) is dict
                    and 0 < len(event_type) <= MAX_EVENT_TYPE_CHARS and len(data) <= max_keys
                ):  # fmt: skip
                    try:
                        encoded, type_field = dumps(data), text(event_type)
                    except (orjson.JSONEncodeError, copyformat.Unencodable):
                        pass
                    else:
                        n = len(encoded)
                        if (
                            n <= limit and event_type != "batch" and b"\\" not in encoded
                            and (n <= 2 * room or encoded.count(b"{") + encoded.count(b"[") <= room)
                        ):  # fmt: skip
                            head = heads.pop() if heads else row_head()
                            rows.append(join((head, type_field, jsonb_header(n + 1, version), encoded, middle, tail)))
                            continue
            try:
                rows.append(self._row(event, is_batch, defaults, ctx))
            except EventRejected as exc:
                check_depth(event, event_depth)  # what was rejected was never serialized, so never depth-checked
                rejected.append(Rejection(index, str(exc), exc.error))
        return rows, rejected

    def _defaults(self, wrapper: dict[str, Any], ctx: RequestContext) -> _Defaults:
        """The wrapper's inherited fields, validated and encoded once per request instead of once per event."""
        try:
            fields = [_text(wrapper, name) for name in ROW_TEXT_FIELDS]
            raw_ts = wrapper.get("timestamp")
            fields.append(ctx.received if raw_ts is None or raw_ts == "" else copyformat.timestamp(_timestamp(raw_ts)))
            extra = {k: v for k, v in wrapper.items() if k not in KNOWN_FIELDS}
            fields.append(copyformat.jsonb(self._json(extra, "unknown fields", 0) if extra else None))
        except EventRejected as exc:
            check_depth({k: v for k, v in wrapper.items() if k != "events"}, 1)
            raise InvalidEvent(f"the batch wrapper is invalid: {exc}") from None
        middle = b"".join(fields)
        if len(middle) > self.max_inherited_bytes:  # copied into every event: cap it before it is multiplied
            raise RequestRowsTooLarge(
                f"the batch wrapper's fields that every event inherits are {len(middle)} bytes encoded;"
                f" at most {self.max_inherited_bytes} are accepted"
            )
        return _Defaults(fields, middle, extra, {})

    def _row(self, event: Any, is_batch: bool, d: _Defaults, ctx: RequestContext) -> bytes:
        if type(event) is not dict:
            raise EventRejected("an event must be a JSON object")
        event_type = event.get("eventType")
        if type(event_type) is not str or not event_type or event_type.isspace():
            raise EventRejected("`eventType` is required and must be a non-empty string (not only whitespace)")
        if len(event_type) > MAX_EVENT_TYPE_CHARS:
            raise EventRejected(f"`eventType` must be at most {MAX_EVENT_TYPE_CHARS} characters")
        if event.keys() <= SIMPLE_FIELDS:
            # The usual batch sub-event: everything but its type, data and id comes from the wrapper.
            middle = d.middle
        else:
            middle = self._middle(event, is_batch, d, ctx)
        if is_batch and event_type == "batch":
            raise EventRejected("a batch may not contain another batch")
        if is_batch and "consent" in event:
            raise EventRejected("`consent` is the request's: set it once, on the batch wrapper")
        data = event.get("eventData")
        if data is None:
            data_head, data_json = copyformat.NULL, b""
        elif type(data) is dict:
            if len(data) > self.max_event_data_keys:
                limit = self.max_event_data_keys
                raise EventRejected(f"`eventData` has {len(data)} keys; at most {limit} are accepted")
            # The jsonb field's header and its JSON go into the row's join as two pieces: concatenating them
            # first would copy the JSON once more per event.
            data_json = self._json(data, "eventData", 3 if is_batch else 1)
            data_head = _JSONB_HEADER(len(data_json) + 1, JSONB_VERSION)
        else:
            raise EventRejected("`eventData` must be a JSON object")
        given_id = event.get("eventId")
        try:
            type_field = event_type_field(event_type)
        except copyformat.Unencodable as exc:
            raise EventRejected(f"`eventType` {exc}") from None
        return b"".join((
            row_head() if given_id is None else ROW_START_AND_UUID_LENGTH + _event_id(given_id),
            type_field, data_head, data_json, middle, ctx.tail,
        ))  # fmt: skip

    def _middle(self, event: dict[str, Any], is_batch: bool, d: _Defaults, ctx: RequestContext) -> bytes:
        """The inherited columns of an event that sets some of them itself."""
        if is_batch:
            site = event.get("siteId")
            if site is not None:
                domain = normalize_domain(site) if type(site) is str else None
                if domain is None:
                    raise EventRejected(SITE_ID_RULE, InvalidSite.error)
                if domain != ctx.site_id:
                    raise EventRejected(f"`siteId` differs from the request's domain {ctx.site_id}")
        fields = d.fields.copy()
        for position, name in enumerate(ROW_TEXT_FIELDS):
            if event.get(name) is not None:
                fields[position] = _text(event, name)
        raw_ts = event.get("timestamp")
        if raw_ts is not None and raw_ts != "":  # "" is missing, like null (clients send it for "no time known")
            encoded = d.seen_timestamps.get(raw_ts) if type(raw_ts) is str else None
            if encoded is None:
                encoded = copyformat.timestamp(_timestamp(raw_ts))
                d.seen_timestamps[raw_ts] = encoded
            fields[TIMESTAMP_FIELD] = encoded
        if not event.keys() <= KNOWN_FIELDS:
            own = {k: v for k, v in event.items() if k not in KNOWN_FIELDS}
            self._json(own, "unknown fields", 2 if is_batch else 0)
            fields[EXTRA_FIELD] = copyformat.jsonb(self._json({**d.extra, **own}, "unknown fields", 0))
        return b"".join(fields)

    def _json(self, value: dict[str, Any], what: str, parent_depth: int) -> bytes:
        """`value` serialized for a jsonb column, checked for size, NUL and depth (its parent at `parent_depth`)."""
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise EventRejected(f"`{what}` cannot be stored: {exc}") from None
        # Nesting past the limit takes at least two bytes a level, so short values skip even the bracket count.
        room = MAX_JSON_DEPTH - parent_depth
        if len(encoded) > 2 * room and encoded.count(b"{") + encoded.count(b"[") > room:
            check_depth(value, parent_depth + 1)
        if len(encoded) > self.max_event_bytes:
            raise EventRejected(f"`{what}` is {len(encoded)} bytes; at most {self.max_event_bytes} are accepted")
        # PostgreSQL's jsonb refuses the NUL character; catching it here keeps one event from failing a batch.
        if b"\\" in encoded and b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
            raise EventRejected(f"`{what}` contains a NUL character")
        return encoded


def _event_type(event_type: str) -> bytes:
    """An eventType as its encoded field; Unencodable if it is only whitespace (the batch fast path then leaves it
    to _row, which refuses it by name). Cached apart from other text: a request's event types repeat, and the
    blank check then costs a cache hit, as the encoding alone did."""
    if event_type.isspace():
        raise copyformat.Unencodable("is only whitespace")
    return copyformat.text(event_type)


# Event types are at most MAX_EVENT_TYPE_CHARS (100) characters, ~1 KB an entry at most: ~4 MB in all.
event_type_field = lru_cache(maxsize=4096)(_event_type)


def _text(event: dict[str, Any], name: str) -> bytes:
    """The encoded text field `name` of an event (NULL when absent)."""
    value = event.get(name)
    if value is None:
        return copyformat.NULL
    if type(value) is not str:
        raise EventRejected(f"`{name}` must be a string")
    if len(value) > TEXT_LIMITS[name]:
        raise EventRejected(f"`{name}` is longer than {TEXT_LIMITS[name]} characters")
    try:
        if len(value) > copyformat.MAX_CACHED_TEXT_CHARS or name in UNCACHED_FIELDS:
            return copyformat.text(value)
        return copyformat.cached_text(value)
    except copyformat.Unencodable as exc:
        raise EventRejected(f"`{name}` {exc}") from None


def _event_id(value: Any) -> bytes:
    if type(value) is not str:
        raise EventRejected("`eventId` must be a UUID string")
    try:
        return PgUUID(value).bytes
    except ValueError:
        raise EventRejected("`eventId` must be a UUID") from None


def _timestamp(value: Any) -> datetime:
    if type(value) is not str:
        raise EventRejected("`timestamp` must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventRejected(f"`timestamp` {value[:40]!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Outside this range a clock is broken, and near year 1 or 9999 the UTC conversion would overflow.
    if not 1970 <= parsed.year <= 2999:
        raise EventRejected(f"`timestamp` {value[:40]!r} is out of range")
    return parsed


def _host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return normalize_domain(host) if host else None
