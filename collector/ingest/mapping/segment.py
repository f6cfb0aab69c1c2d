"""Segment's HTTP Tracking API (also what RudderStack's and Jitsu's libraries send) mapped to /collect events.

A message's fields and where each goes are in docs/protocols.md; in short: the call type (track's `event`) is the
eventType, `messageId` the eventId (uuid5 of it when it is not a UUID), `properties` (or `traits`) the eventData,
`anonymousId` (else `userId`) the visitorId, `context.page` the url, path and referrer, the clock-skew-corrected
`timestamp` the timestamp, `context.ip` and `context.userAgent` the request's address and agent; everything else
but the write key and the send time is kept in `extra`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from collector.errors import InvalidEvent
from collector.ingest.events import KNOWN_FIELDS, MAX_EVENT_TYPE_CHARS, event_type_field
from collector.ingest.mapping import rows
from collector.ingest.mapping.common import (
    MAX_CACHED_URL_CHARS,
    Mapped,
    MappingRejected,
    address,
    drop_none,
    event_id,
    host_of_url,
    iso,
    parse_time,
    path_of_url,
    skew_corrected,
    text,
    url_parts,
)
from collector.ingest.mapping.rows import Encoded, Fallback, RowEncoder
from collector.storage.copyformat import Unencodable

_TEXTS = frozenset((str, type(None)))
_SENT, _UNSEEN = object(), object()  # RowEncoder.plans' key of a parsed sentAt; not found
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NOTHING: dict[str, Any] = {}  # an absent context, page or page properties: only ever read
# The call types, and the eventType each is stored as (track: its own `event` name).
EVENT_TYPES = {
    "track": None, "page": "pageview", "screen": "screen", "identify": "identify", "group": "group", "alias": "alias",
}  # fmt: skip
# Where each call keeps its payload object (stored as eventData).
DATA_FIELDS = {"track": "properties", "page": "properties", "screen": "properties", "identify": "traits",
               "group": "traits", "alias": None}  # fmt: skip
# Top-level fields consumed by the mapping (their values go to columns, or are the protocol's own bookkeeping):
# never copied into `extra` under their own name.
_COLUMNS = frozenset(("ip", "userAgent"))
CONSUMED = frozenset((
    "type", "event", "messageId", "anonymousId", "properties", "traits", "timestamp", "sentAt", "context",
    "writeKey", "receivedAt", "originalTimestamp", "_metadata",
))  # fmt: skip


def messages_of(body: dict[str, Any], call: str | None, max_messages: int) -> list[Any]:
    """The messages of a request: `batch`'s (each given the batch's `context` and `integrations` under its own), or
    the body itself for a single call (`call`: the path's type, which the body's `type` cannot change)."""
    if call is not None:
        return [{**body, "type": call}]
    batch = body.get("batch")
    if type(batch) is not list or not batch:
        raise InvalidEvent("a batch needs a non-empty `batch` array")
    if len(batch) > max_messages:
        raise InvalidEvent(f"the batch has {len(batch)} messages; at most {max_messages} are accepted per request")
    shared = [(k, body[k]) for k in ("context", "integrations") if type(body.get(k)) is dict]
    if not shared and "sentAt" not in body:
        return batch
    # In place: the messages are this request's own parse, and a copy of each cost more than its mapping's lookups.
    sent = body.get("sentAt")
    for message in batch:
        if type(message) is dict:
            for k, v in shared:
                own = message.get(k)
                if not own:
                    message[k] = dict(v)  # each its own: nothing may change one message's through another
                elif type(own) is dict:
                    message[k] = {**v, **own}
                # else the message's own value, which is no object, stays (the mapping ignores such a context)
            message.setdefault("sentAt", sent)
    return batch


def map_message(message: Any, received: datetime, key_domain: str | None) -> Mapped:
    """One message as our event, its site (the page URL's host, else the write key's domain), address and agent:
    the /collect dict (the path of what encode_message does not take on)."""
    event_type, context, page, data, own, url = _read(message)
    event: dict[str, Any] = {
        "eventType": event_type,
        "eventId": event_id("segment", message.get("messageId")),
        "eventData": data,
        "visitorId": text(message.get("anonymousId")) or text(message.get("userId")),
        "url": text(url),
        "path": text(page.get("path") or own.get("path")) or path_of_url(url),
        "referrer": text(page.get("referrer") or own.get("referrer")),
        "timestamp": iso(_time(message, received)),
    }
    event = drop_none(event)
    event.update(_extra(message, context))
    ip, agent = _sender(context)
    return Mapped(event, host_of_url(url) or key_domain, ip=ip, user_agent=agent)


def encode_message(enc: RowEncoder, received: datetime, key_domain: str | None, message: Any) -> Encoded:
    """map_message's event encoded as its row (rows.py); Fallback for what only the /collect path may decide. The
    fields are map_message's, read the same way; the usual values are encoded here without a call of ours. The
    message last: the door binds the rest once per request (functools.partial, whose positional form is the
    cheapest call)."""
    event_type, context, page, data, own, url = _read(message)
    head = rows.event_head("segment", message.get("messageId"))
    time = _encoded_time(message, received, enc)
    visitor = message.get("anonymousId")
    if type(visitor) is not str or not visitor:
        visitor = text(visitor) or text(message.get("userId"))
    path = page.get("path") or own.get("path")
    referrer = page.get("referrer") or own.get("referrer")
    # A batch's messages mostly share their page and visitor: their columns are encoded once per request (keyed by
    # text values only: 1, 1.0 and True are equal keys but different fields).
    key = (visitor, url, path, referrer)
    if type(url) is str and type(visitor) in _TEXTS and type(path) in _TEXTS and type(referrer) in _TEXTS:
        found = enc.middles.get(key)
        if found is None:
            found = enc.middles[key] = _middle(enc, visitor, url, path, referrer)
        host, middle = found
    else:
        host, middle = _middle(enc, visitor, url, path, referrer)
    if len(event_type) > MAX_EVENT_TYPE_CHARS or event_type == "batch":
        raise Fallback
    try:
        type_field = event_type_field(event_type)
    except Unencodable:
        raise Fallback from None
    data_field, extra_field = enc.data(data), enc.extra(_extra(message, context))
    ip, agent = context.get("ip"), context.get("userAgent")
    ip, agent = None if ip is None else address(ip), agent if type(agent) is str and agent else None
    if time is None:  # the receive time, which Ingest knows
        return host or key_domain, ip, agent, b"".join((head, type_field, data_field, middle)), extra_field
    return host or key_domain, ip, agent, b"".join((head, type_field, data_field, middle, time, extra_field)), None


def _middle(enc: RowEncoder, visitor: Any, url: Any, path: Any, referrer: Any) -> tuple[str | None, bytes]:
    """The page's host, and the session (none), visitor, url, path and referrer columns as map_message's fields
    encode (else Fallback)."""
    if type(url) is str and url and len(url) <= MAX_CACHED_URL_CHARS:
        host, url_path = url_parts(url)
    else:
        host, url_path = host_of_url(url), path_of_url(url)
    path = (path if type(path) is str else text(path)) or url_path  # text() but for the usual string
    return host, enc.columns(None, visitor, url, path, referrer)  # each as text() leaves it


def _read(message: Any) -> tuple[str, dict[str, Any], dict[str, Any], Any, dict[str, Any], Any]:
    """The message's event type, context, context.page, payload object, page properties and page URL."""
    if type(message) is not dict:
        raise MappingRejected("a message must be a JSON object")
    call = message.get("type")
    if type(call) is not str or call not in EVENT_TYPES:
        raise MappingRejected("`type` must be one of " + ", ".join(EVENT_TYPES))
    event_type = message.get("event") if call == "track" else EVENT_TYPES[call]
    if type(event_type) is not str or not event_type:
        raise MappingRejected("a track call needs an `event` name")
    context = message.get("context")
    context = context if type(context) is dict else _NOTHING
    page = context.get("page")
    page = page if type(page) is dict else _NOTHING
    data_field = DATA_FIELDS[call]
    data = message.get(data_field) if data_field else None
    # A page call's standard properties name the page too (server libraries send no context.page).
    own = data if call == "page" and type(data) is dict else _NOTHING
    return event_type, context, page, data, own, page.get("url") or own.get("url")


def _encoded_time(message: dict[str, Any], received: datetime, enc: RowEncoder) -> bytes | None:
    """_time's event_timestamp field, remembered for the request by (timestamp, sentAt): a batch's often repeat.
    Otherwise skew_corrected's arithmetic in integer microseconds, exact as its datetimes' (a correction it could
    not represent is more than ten years: the device's own time either way), with the batch's one sentAt parsed
    once: each message of a real batch has its own timestamp."""
    raw_time, sent = message.get("timestamp"), message.get("sentAt")
    key = (raw_time, sent) if type(raw_time) is str and (sent is None or type(sent) is str) else None
    times = enc.times
    if key is not None and key in times:
        return times[key]
    occurred = parse_time(raw_time)
    if occurred is None:
        time = None
    else:
        occurred_us = (occurred - _UNIX_EPOCH) // _MICROSECOND
        found = enc.plans.get((_SENT, sent), _UNSEEN) if key is not None else _UNSEEN
        sent_us: int | None
        if found is _UNSEEN:
            sent_at = parse_time(sent)
            sent_us = None if sent_at is None else (sent_at - _UNIX_EPOCH) // _MICROSECOND
            if key is not None:
                enc.plans[(_SENT, sent)] = sent_us
        else:
            sent_us = cast(int | None, found)
        if sent_us is None:
            time = rows.timestamp_us(occurred_us)
        else:
            time = enc.corrected(occurred_us, sent_us, received)
    if key is not None:
        times[key] = time
    return time


def _time(message: dict[str, Any], received: datetime) -> datetime | None:
    """The event's time on the server's clock (skew-corrected with sentAt)."""
    occurred = parse_time(message.get("timestamp"))
    return skew_corrected(occurred, parse_time(message.get("sentAt")), received)


def _extra(message: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """What is kept in `extra`: the timestamp as sent, the context but the address and agent (the request's
    columns, never extra), and every other field (a name of ours prefixed `segment_`)."""
    extra: dict[str, Any] = {}
    if (original := message.get("timestamp")) is not None:
        extra["originalTimestamp"] = original
    rest = {k: v for k, v in context.items() if k not in ("ip", "userAgent")} if _COLUMNS & context.keys() else context
    if rest:
        extra["context"] = rest
    for name, value in message.items():
        if name not in CONSUMED and value is not None:
            extra[name if name not in KNOWN_FIELDS else f"segment_{name}"] = value
    return extra


def _sender(context: dict[str, Any]) -> tuple[str | None, str | None]:
    """The user's address and agent the message names (context.ip, context.userAgent), if usable."""
    agent = context.get("userAgent")
    return address(context.get("ip")), agent if type(agent) is str and agent else None
