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
from collector.ingest.mapping.common import Mapped, drop_none, host_of_url, path_of_url, text
from collector.ingest.sites import normalize_domain

# Each field by its long name, and the short name the script sends instead.
FIELDS = {"name": "n", "url": "u", "domain": "d", "referrer": "r", "props": "p", "revenue": "$",
          "hashMode": "h", "interactive": "i"}  # fmt: skip
SHORT = {short: long for long, short in FIELDS.items()}
MAX_SITES = 10  # a roll-up to more sites than this is not a page's configuration


def map_event(body: dict[str, Any]) -> list[Mapped]:
    """The event once per site named in `domain`; InvalidEvent (the whole request: Plausible sends one event)."""
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
    event = drop_none(event)
    mapped = []
    for site in sites:
        domain = normalize_domain(site)
        if domain is None:
            raise InvalidEvent(f"`domain` {site[:100]!r} is not a host name")
        mapped.append(Mapped(dict(event), domain))
    return mapped
