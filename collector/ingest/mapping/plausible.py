"""Plausible's events API (`POST /api/event`) mapped to /collect events.

Plausible's script and the plausible-tracker package send short names (n, u, d, r, p, m, $, h, i); its documented
API the long ones (name, url, domain, referrer, props, revenue). Both are read. `domain` is the site; a
comma-separated list (Plausible's roll-up of one event into several sites) stores the event once per site.
"""

from __future__ import annotations

from typing import Any

import orjson

from collector.errors import InvalidEvent
from collector.ingest.events import KNOWN_FIELDS
from collector.ingest.mapping import rows
from collector.ingest.mapping.common import Mapped, drop_none, host_of_url, path_of_url, text
from collector.ingest.mapping.rows import Encoded, RowEncoder
from collector.ingest.sites import normalize_domain
from collector.storage.copyformat import NULL

# Each field by its long name, and the short name the script sends instead.
FIELDS = {"name": "n", "url": "u", "domain": "d", "referrer": "r", "props": "p", "revenue": "$",
          "hashMode": "h", "interactive": "i"}  # fmt: skip
SHORT = {short: long for long, short in FIELDS.items()}
MAX_SITES = 10  # a roll-up to more sites than this is not a page's configuration


def map_event(body: dict[str, Any]) -> list[Mapped]:
    """The event once per site named in `domain` (the /collect dicts); InvalidEvent (the whole request: Plausible
    sends one event)."""
    sites, event = _read(body)
    return [Mapped(dict(event), domain) for domain in sites]


def encode_event(body: dict[str, Any], enc: RowEncoder) -> list[Encoded]:
    """map_event's rows (rows.py), one per site; Fallback for what only the /collect path may decide."""
    sites, event = _read(body)
    extra = {k: v for k, v in event.items() if k not in KNOWN_FIELDS}
    fields = (NULL, NULL, enc.text(event["url"], rows.URL), enc.text(event.get("path"), rows.PATH, True),
              enc.text(event.get("referrer"), rows.REFERRER))  # fmt: skip
    middle = enc.middle(fields)
    type_field, data, back = rows.event_type(event["eventType"]), enc.data(event.get("eventData")), enc.extra(extra)
    # No time: the receive time, which Ingest knows, goes between the body and `extra`.
    return [(domain, None, None, b"".join((rows.head(None), type_field, data, middle)), back) for domain in sites]


def _read(body: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The sites (normalized) and the /collect event."""
    given = {SHORT.get(k, k): v for k, v in body.items()}
    name, url, domains = given.get("name"), given.get("url"), given.get("domain")
    if type(name) is not str or not name:
        raise InvalidEvent("`name` (the event's name, e.g. pageview) is required")
    if host_of_url(url) is None:
        raise InvalidEvent("`url` must be the page's http(s) URL")
    if type(domains) is not str or not domains:
        raise InvalidEvent("`domain` (the site, as configured) is required")
    sites = [part.strip() for part in domains.split(",") if part.strip()]
    if len(sites) > MAX_SITES:
        raise InvalidEvent(f"`domain` names more than {MAX_SITES} sites")
    props = given.get("props", given.get("m"))
    if type(props) is str:  # the script sends them as a JSON string
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            raise InvalidEvent("`props` must be a JSON object") from None
    event: dict[str, Any] = {
        "eventType": name,
        "eventData": props,
        "url": url,
        "path": path_of_url(url),
        "referrer": text(given.get("referrer")),
    }
    for key, value in given.items():
        if key not in ("name", "url", "domain", "referrer", "props", "m") and value is not None:
            event["plausible_" + key if key in KNOWN_FIELDS else key] = value
    normalized = []
    for site in sites:
        domain = normalize_domain(site)
        if domain is None:
            raise InvalidEvent(f"`domain` {site[:100]!r} is not a host name")
        normalized.append(domain)
    return normalized, drop_none(event)
