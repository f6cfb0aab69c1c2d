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
from collector.ingest.mapping.rows import MAX_CACHED, PATH, REFERRER, URL, Encoded, Fallback, RowEncoder
from collector.ingest.sites import normalize_domain
from collector.storage import copyformat
from collector.storage.copyformat import NULL

# Each field by its long name, and the short name the script sends instead.
FIELDS = {"name": "n", "url": "u", "domain": "d", "referrer": "r", "props": "p", "revenue": "$",
          "hashMode": "h", "interactive": "i"}  # fmt: skip
SHORT = {short: long for long, short in FIELDS.items()}
READ = frozenset(("name", "url", "domain", "referrer", "props", "m"))  # the fields with a column of their own
MAX_SITES = 10  # a roll-up to more sites than this is not a page's configuration


def map_event(body: dict[str, Any]) -> list[Mapped]:
    """The event once per site named in `domain` (the /collect dicts); InvalidEvent (the whole request: Plausible
    sends one event)."""
    sites, name, props, url, referrer, extra = _read(body)
    event = {"eventType": name, "eventData": props, "url": url, "path": path_of_url(url), "referrer": referrer}
    event = drop_none(event)
    event.update(extra)
    return [Mapped(dict(event), domain) for domain in sites]


def encode_event(body: dict[str, Any], enc: RowEncoder) -> list[Encoded]:
    """map_event's rows (rows.py), one per site; Fallback for what only the /collect path may decide. `enc` may
    serve many requests: its caches are not used."""
    sites, name, props, url, referrer, extra = _read(body)
    path = path_of_url(url)
    if (
        len(url) > URL
        or (path is not None and len(path) > PATH)
        or (referrer is not None and (type(referrer) is not str or len(referrer) > REFERRER))
    ):
        raise Fallback
    try:  # one event: nothing repeats within the request, so no per-request cache (RowEncoder.texts)
        url_field = copyformat.text(url)
        path_field = NULL if path is None else copyformat.cached_text(path) if len(path) <= MAX_CACHED else (
            copyformat.text(path)
        )  # fmt: skip
        referrer_field = NULL if referrer is None else copyformat.text(referrer)
    except copyformat.Unencodable:
        raise Fallback from None
    middle = enc.middle((NULL, NULL, url_field, path_field, referrer_field))
    type_field, data, back = rows.event_type(name), enc.data(props), enc.extra(extra)
    # No time: the receive time, which Ingest knows, goes between the body and `extra`.
    return [
        (domain, None, None, b"".join((rows.event_head("plausible", None), type_field, data, middle)), back)
        for domain in sites
    ]


def _read(body: dict[str, Any]) -> tuple[list[str], str, Any, str, Any, dict[str, Any]]:
    """The sites (normalized), and the event's name, props, URL, referrer and what is kept in `extra`."""
    given = body if body.keys().isdisjoint(SHORT) else {SHORT.get(k, k): v for k, v in body.items()}
    name, url, domains = given.get("name"), given.get("url"), given.get("domain")
    if type(name) is not str or not name:
        raise InvalidEvent("`name` (the event's name, e.g. pageview) is required")
    if host_of_url(url) is None:
        raise InvalidEvent("`url` must be the page's http(s) URL")
    if type(domains) is not str or not domains:
        raise InvalidEvent("`domain` (the site, as configured) is required")
    if "," in domains:
        sites = [part.strip() for part in domains.split(",") if part.strip()]
    else:  # one site, the usual
        sites = [site] if (site := domains.strip()) else []
    if len(sites) > MAX_SITES:
        raise InvalidEvent(f"`domain` names more than {MAX_SITES} sites")
    props = given.get("props", given.get("m"))
    if type(props) is str:  # the script sends them as a JSON string
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            raise InvalidEvent("`props` must be a JSON object") from None
    extra = {
        ("plausible_" + key if key in KNOWN_FIELDS else key): value
        for key, value in given.items() if key not in READ and value is not None
    }  # fmt: skip
    normalized = []
    for site in sites:
        domain = normalize_domain(site)
        if domain is None:
            raise InvalidEvent(f"`domain` {site[:100]!r} is not a host name")
        normalized.append(domain)
    assert type(url) is str  # host_of_url took it
    return normalized, name, props, url, text(given.get("referrer")), extra
