"""Segment's HTTP Tracking API (also what RudderStack's and Jitsu's libraries send) mapped to /collect events.

A message's fields and where each goes are in docs/protocols.md; in short: the call type (track's `event`) is the
eventType, `messageId` the eventId (uuid5 of it when it is not a UUID), `properties` (or `traits`) the eventData,
`anonymousId` (else `userId`) the visitorId, `context.page` the url, path and referrer, the clock-skew-corrected
`timestamp` the timestamp, `context.ip` and `context.userAgent` the request's address and agent; everything else
but the write key and the send time is kept in `extra`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.errors import InvalidEvent
from collector.ingest.events import KNOWN_FIELDS
from collector.ingest.mapping.common import (
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
)

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
    shared = {k: body[k] for k in ("context", "integrations") if type(body.get(k)) is dict}
    if not shared and "sentAt" not in body:
        return batch
    merged = []
    for message in batch:
        if type(message) is dict:
            message = {**message, **{k: {**v, **(message.get(k) or {})} for k, v in shared.items()}}
            message.setdefault("sentAt", body.get("sentAt"))
        merged.append(message)
    return merged


def map_message(message: Any, received: datetime, key_domain: str | None) -> Mapped:
    """One message as our event, its site (the page URL's host, else the write key's domain), address and agent."""
    if type(message) is not dict:
        raise MappingRejected("a message must be a JSON object")
    call = message.get("type")
    if type(call) is not str or call not in EVENT_TYPES:
        raise MappingRejected("`type` must be one of " + ", ".join(EVENT_TYPES))
    event_type = message.get("event") if call == "track" else EVENT_TYPES[call]
    if type(event_type) is not str or not event_type:
        raise MappingRejected("a track call needs an `event` name")
    context = message.get("context")
    context = context if type(context) is dict else {}
    page = context.get("page")
    page = page if type(page) is dict else {}
    data_field = DATA_FIELDS[call]
    data = message.get(data_field) if data_field else None
    # A page call's standard properties name the page too (server libraries send no context.page).
    own = data if call == "page" and type(data) is dict else {}
    url = page.get("url") or own.get("url")
    occurred = parse_time(message.get("timestamp"))
    corrected = skew_corrected(occurred, parse_time(message.get("sentAt")), received)
    # ip and userAgent become the request's columns (under the site's IP rule), never extra: the rest is kept.
    rest = {k: v for k, v in context.items() if k not in ("ip", "userAgent")} if _COLUMNS & context.keys() else context
    event: dict[str, Any] = {
        "eventType": event_type,
        "eventId": event_id("segment", message.get("messageId")),
        "eventData": data,
        "visitorId": text(message.get("anonymousId")) or text(message.get("userId")),
        "url": text(url),
        "path": text(page.get("path") or own.get("path")) or path_of_url(url),
        "referrer": text(page.get("referrer") or own.get("referrer")),
        "timestamp": iso(corrected),
        "originalTimestamp": message.get("timestamp"),
        "context": rest or None,
    }
    for name, value in message.items():
        if name not in CONSUMED and value is not None:
            event[name if name not in KNOWN_FIELDS else f"segment_{name}"] = value
    ip = context.get("ip")
    agent = context.get("userAgent")
    return Mapped(
        drop_none(event),
        host_of_url(url) or key_domain,
        ip=address(ip),
        user_agent=agent if type(agent) is str and agent else None,
    )
