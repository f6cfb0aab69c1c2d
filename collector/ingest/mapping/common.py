"""What every protocol mapping shares: the mapped event, its grouping into /collect batches, ids and clock skew."""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from collector.ingest.sites import normalize_domain

# The namespace of event ids derived from a protocol's non-UUID message id: uuid5(ID_NAMESPACE, "<protocol>:<id>").
# Fixed for ever (changing it would make a resend after an upgrade a new event): the same message id of the same
# protocol is always the same event id, so a client's retries are taken once (events_unique) as /collect's are.
ID_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-4e59-9a43-1d2f3c4b5a69")
# Longest message id taken as given; a longer one is not an id a client library makes, and is refused.
MAX_MESSAGE_ID_CHARS = 256


# The inherited text fields a group's events share often enough to be worth moving to its batch wrapper.
HOISTED = ("sessionId", "visitorId", "url", "path", "referrer")


class MappingRejected(ValueError):
    """One message cannot be mapped (the others in its request are unaffected); counted as invalid_event."""


@dataclass(slots=True)
class Mapped:
    """One event in our /collect shape, with what its Ingest call must share with the others of its group."""

    event: dict[str, Any]  # eventType, eventId, eventData, sessionId, ..., and unknown keys (stored in `extra`)
    domain: str | None  # the site, normalized (None: refused, no site to take it from)
    ip: str | None = None  # an address the message names for its user (Segment context.ip), else the peer's
    user_agent: str | None = None  # the message's own User-Agent (context.userAgent, Snowplow `ua`), else the header


@dataclass(slots=True)
class Group:
    """The events one Ingest call takes: one site, one address, one User-Agent. `indexes` are their positions in
    the request (so that a rejection inside the group names the message the client sent)."""

    domain: str
    ip: str | None
    user_agent: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """A /collect batch of the group's events (a batch even for one: the wrapper itself is never stored).

        A text field every event sets to the same value (a browser batch's visitor and page) moves to the wrapper,
        which the events inherit: it is then validated and encoded once per request, not once per event."""
        events, wrapper = self.events, {"eventType": "batch", "siteId": self.domain}
        first = events[0]
        shared = [
            name for name in HOISTED if type(v := first.get(name)) is str and all(e.get(name) == v for e in events)
        ]
        if shared:
            wrapper.update((name, first[name]) for name in shared)
            events = [{k: v for k, v in e.items() if k not in shared} for e in events]
        return {**wrapper, "events": events}


def group(mapped: list[tuple[int, Mapped]]) -> list[Group]:
    """The mapped events by (site, address, User-Agent), in the order each group first appears."""
    groups: dict[tuple[str, str | None, str | None], Group] = {}
    for index, m in mapped:
        assert m.domain is not None
        key = (m.domain, m.ip, m.user_agent)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(m.domain, m.ip, m.user_agent)
        g.events.append(m.event)
        g.indexes.append(index)
    return list(groups.values())


def event_id(protocol: str, value: Any) -> str | None:
    """The event id of a protocol's message id: itself when it is a UUID, else uuid5 of it (see ID_NAMESPACE)."""
    if value is None or value == "":
        return None
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        raise MappingRejected("the message id must be a string")
    given: str = value
    if len(given) > MAX_MESSAGE_ID_CHARS:
        raise MappingRejected(f"the message id is longer than {MAX_MESSAGE_ID_CHARS} characters")
    if UUID_TEXT.fullmatch(given):  # the usual case, taken as is (a third of the cost of parsing it)
        return given
    try:
        return str(uuid.UUID(given))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, f"{protocol}:{given}"))


def host_of_url(url: Any) -> str | None:
    """The normalized host of a page URL, None if it is not an http(s) URL with one."""
    if type(url) is not str or len(url) > 8192:
        return None
    return url_parts(url)[0] if len(url) <= MAX_CACHED_URL_CHARS else _split(url)[0]


def path_of_url(url: Any) -> str | None:
    """The path of a page URL (what /collect's `path` holds), None when there is none to take."""
    if type(url) is not str or len(url) > 8192:
        return None
    return url_parts(url)[1] if len(url) <= MAX_CACHED_URL_CHARS else _split(url)[1]


def _split(url: str) -> tuple[str | None, str | None]:
    """(host, path) of a URL: the host only for http(s)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None, None
    domain = normalize_domain(host) if host and parts.scheme in ("http", "https") else None
    return domain, parts.path or None


# A batch's messages name a few pages many times: split each once. Keys of at most MAX_CACHED_URL_CHARS, 4,096 of
# them: ~10 MB at most.
MAX_CACHED_URL_CHARS = 2048
url_parts = lru_cache(maxsize=4096)(_split)
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (a naive one is UTC), or None when absent or unreadable (the skew rule then skips it)."""
    if type(value) is not str or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def from_millis(value: Any) -> datetime | None:
    """A time in Unix milliseconds (Snowplow's dtm, stm, ttm: digits as text), None when absent or unreadable."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 15:
        try:
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        except (ValueError, OverflowError, OSError):  # past year 9999: no time a device had
            return None
    return None


def skew_corrected(occurred: datetime | None, sent: datetime | None, received: datetime) -> datetime | None:
    """When the event occurred on the server's clock: received - (sent - occurred), as Segment computes `timestamp`
    and Snowplow `derived_tstamp`; `occurred` as given when there is no send time; None when neither is known."""
    if occurred is None:
        return None
    if sent is None:
        return occurred
    try:
        corrected = received - (sent - occurred)
    except OverflowError:  # a send time thousands of years from the event's
        return occurred
    # A device clock years off (or a forged send time) gives a time no event had: keep the device's own then.
    return corrected if abs(corrected - received) < timedelta(days=3650) else occurred


def iso(value: datetime | None) -> str | None:
    """The time as the ISO 8601 text /collect's `timestamp` takes (None stays None). A time whose UTC date is
    outside datetime's range (year 1 east of Greenwich) keeps its offset: /collect refuses it as out of range."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    except OverflowError:
        return value.isoformat(timespec="milliseconds")


def text(value: Any) -> Any:
    """An id or text field: a number (ids often are) as its text, anything else as given, "" as absent: /collect's
    validation then refuses, by name, a value that is not a string or is too long (never cut or dropped here)."""
    if type(value) is int or type(value) is float:
        return str(value)
    return None if value == "" else value


def drop_none(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its absent fields (so that a batch sub-event inherits nothing it did not set)."""
    return {k: v for k, v in event.items() if v is not None}


def address(value: Any) -> str | None:
    """An IP address a message names for its user (Segment context.ip, Snowplow `ip`), None if it is not one: it
    is stored under the site's IP rule (hashed or left out) as the peer's would be, never in `extra`."""
    if type(value) is not str or len(value) > 45:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
