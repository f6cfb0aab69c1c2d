"""Snowplow's tracker protocol 2 (POST tp2's payload_data, GET /i's query) mapped to /collect events.

`aid` (the app id, set to the site's domain) is the site, else the page URL's host; `eid` the eventId; `e` the
eventType (pv: pageview, pp: page_ping, se: structured, ue: the self-describing event's name, tr/ti: transaction,
transaction_item); `duid` and `sid` the visitor and session; `ttm`, else `dtm` corrected by `stm` as Snowplow's
derived_tstamp is, the timestamp; contexts (`cx`/`co`) and every other parameter are kept in `extra`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson

from collector.errors import InvalidEvent
from collector.ingest.events import KNOWN_FIELDS
from collector.ingest.mapping import rows
from collector.ingest.mapping.common import (
    MAX_CACHED_URL_CHARS,
    Mapped,
    MappingRejected,
    address,
    drop_none,
    event_id,
    from_millis,
    host_of_url,
    iso,
    path_of_url,
    skew_corrected,
    text,
    url_parts,
)
from collector.ingest.mapping.rows import Encoded, RowEncoder
from collector.ingest.sites import normalize_domain
from collector.storage import copyformat

_TEXTS = frozenset((str, type(None)))
_UNSEEN = b""  # no encoded time is empty
_UNSAFE = object()
# Below 2^33 s, a millisecond count divided by 1000 as a float is within 0.5 µs of its value, so from_millis's
# datetime.fromtimestamp rounds to the exact millisecond: integer arithmetic then gives the same microseconds.
SAFE_MILLIS = 2**33 * 1000
PAYLOAD_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/"
EVENT_TYPES = {"pv": "pageview", "pp": "page_ping", "se": "structured", "tr": "transaction",
               "ti": "transaction_item", "ue": None}  # fmt: skip
STRUCTURED = {"se_ca": "category", "se_ac": "action", "se_la": "label", "se_pr": "property", "se_va": "value"}
PING = {"pp_mix": "min_x", "pp_max": "max_x", "pp_miy": "min_y", "pp_may": "max_y"}
# The fixed event types' fields (a self-describing event's type is its schema's name, checked by rows.event_type).
_TYPE_FIELDS = {name: copyformat.text(name) for name in EVENT_TYPES.values() if name is not None}
CONSUMED = frozenset((
    "e", "eid", "aid", "dtm", "stm", "ttm", "duid", "sid", "url", "refr", "ue_px", "ue_pr", "cx", "co", "ip", "ua",
    *STRUCTURED, *PING,
))  # fmt: skip


def events_of(body: dict[str, Any], max_events: int) -> list[Any]:
    """The events of a tp2 POST body: its `data` array, under a payload_data schema."""
    schema, data = body.get("schema"), body.get("data")
    if type(schema) is not str or not schema.startswith(PAYLOAD_SCHEMA):
        raise InvalidEvent(f"`schema` must be {PAYLOAD_SCHEMA}<version>")
    if type(data) is not list or not data:
        raise InvalidEvent("`data` must be a non-empty array of events")
    if len(data) > max_events:
        raise InvalidEvent(f"the payload has {len(data)} events; at most {max_events} are accepted per request")
    return data


def map_event(params: Any, received: datetime) -> Mapped:
    """One tracker event (its parameters, all strings) as our event, with its site, address and agent: the /collect
    dict (the path of what encode_event does not take on)."""
    kind, event_type, data, schema = _read(params)
    given_id = event_id("snowplow", params.get("eid"))
    extra = _extra(params, kind, schema)
    url = params.get("url")
    event: dict[str, Any] = {
        "eventType": event_type,
        "eventId": given_id,
        "eventData": data,
        "sessionId": text(params.get("sid")),
        "visitorId": text(params.get("duid")),
        "url": text(url),
        "path": path_of_url(url),
        "referrer": text(params.get("refr")),
        "timestamp": iso(_time(params, received)),
    }
    event = drop_none(event)
    event.update(extra)
    agent = params.get("ua")
    return Mapped(
        event, _site(params.get("aid"), url), ip=address(params.get("ip")),
        user_agent=agent if type(agent) is str and agent else None,
    )  # fmt: skip


def encode_event(enc: RowEncoder, received: datetime, params: Any) -> Encoded:
    """map_event's event encoded as its row (rows.py); Fallback for what only the /collect path may decide. The
    fields are map_event's, read the same way; the usual values are encoded here without a call of ours (the
    event last, as segment.encode_message's message)."""
    plan = _planned(enc, params)
    if plan:  # _read's and _extra's work, decided once for the request's events of this kind and parameters
        event_type, data_keys, _, kind, _ = plan
        data = None if data_keys is None else {name: params[key] for key, name in data_keys}
    else:
        kind, event_type, data, schema = _read(params)
    head = rows.event_head("snowplow", params.get("eid"))
    extra = _planned_extra(params, plan) if plan else _extra(params, kind, schema)
    url, aid = params.get("url"), params.get("aid")
    session, visitor, referrer = params.get("sid"), params.get("duid"), params.get("refr")
    # A batch's events mostly share their site, page, visitor and session: the site and those columns are found
    # once per request (keyed by text values only: 1, 1.0 and True are equal keys but different fields).
    page = (aid, session, visitor, url, referrer)
    cached = type(url) is str and type(aid) in _TEXTS and type(session) in _TEXTS and type(visitor) in _TEXTS and (
        type(referrer) in _TEXTS
    )  # fmt: skip
    site = enc.middles.get(page) if cached else None
    if site is None:
        domain = _site(aid, url)  # first: an `aid` that names no site is refused before any Fallback
        site = (domain, _middle(enc, session, visitor, url, referrer))
        if cached:
            enc.middles[page] = site
    domain, middle = site
    key = (params.get("ttm"), params.get("dtm"), params.get("stm"))
    times = enc.times
    try:
        time = times.get(key, _UNSEEN)
    except TypeError:  # a parameter that is not text (a POST payload's JSON): not a key
        time = rows.timestamp(_time(params, received))
    else:
        if time is _UNSEEN:  # (a miss raises no KeyError: each event of a real batch has its own time)
            time = times[key] = _encoded_time(enc, key, params, received)
    type_field = _TYPE_FIELDS.get(event_type) or rows.event_type(event_type)  # a ue event's own name: checked
    data_field, extra_field = enc.data(data), enc.extra(extra)
    ip, agent = params.get("ip"), params.get("ua")
    ip, agent = None if ip is None else address(ip), agent if type(agent) is str and agent else None
    if time is None:  # the receive time, which Ingest knows
        return domain, ip, agent, b"".join((head, type_field, data_field, middle)), extra_field
    return domain, ip, agent, b"".join((head, type_field, data_field, middle, time, extra_field)), None


def _middle(enc: RowEncoder, session: Any, visitor: Any, url: Any, referrer: Any) -> bytes:
    """The session, visitor, url, path and referrer columns, as map_event's fields encode (else Fallback)."""
    if type(url) is str and url and len(url) <= MAX_CACHED_URL_CHARS:
        url_path = url_parts(url)[1]
    else:
        url_path = path_of_url(url)
    return enc.columns(session, visitor, url, url_path, referrer)  # each as text() leaves it


# The kinds whose events of one request and parameter names map alike but for the values (no self-describing data,
# no transaction fields): their reading is planned once per request (RowEncoder.plans).
PLANNED = frozenset(("pv", "pp", "se"))
# (event type, data's (parameter, name) pairs, extra's (parameter, name) pairs in _extra's order, kind, whether it has
# contexts (co/cx, decoded per event))
Plan = tuple[str, list[tuple[str, str]] | None, list[tuple[str, str]], str, bool]


def _planned(enc: RowEncoder, params: Any) -> Plan | None:
    """The request's plan for an event of this kind and these parameter names (made on its first event), or None
    when _read and _extra decide (another kind, or a parameter named schema or contexts, which take extra's first
    places)."""
    if type(params) is not dict or type(kind := params.get("e")) is not str or kind not in PLANNED:
        return None
    shape = (kind, tuple(params))
    plans = enc.plans
    found: Plan | bytes | None = plans.get(shape, _UNSEEN)
    if not isinstance(found, bytes):
        return found
    plan: Plan | None = None
    if "schema" not in params and "contexts" not in params:
        fields = STRUCTURED if kind == "se" else PING if kind == "pp" else None
        data = None if fields is None else [(key, name) for key, name in fields.items() if key in params]
        extra = [(n, n if n not in KNOWN_FIELDS else "snowplow_" + n) for n in params if n not in CONSUMED]
        extra += [(name, name) for name in ("dtm", "stm", "ttm") if name in params]
        plan = (str(EVENT_TYPES[kind]), data, extra, kind, "co" in params or "cx" in params)
    plans[shape] = plan
    return plan


def _planned_extra(params: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """_extra's dict by the plan (no schema: not a self-describing event); _extra itself when a value is None (it
    decides where a replaced None stands)."""
    extra = {dst: params[src] for src, dst in plan[2]}
    if plan[4] and (contexts := _contexts(params)) is not None:
        extra = {"contexts": contexts, **extra}  # the first key, as _extra puts it
    return _extra(params, plan[3], None) if None in extra.values() else extra


def _read(params: Any) -> tuple[str, Any, Any, str | None]:
    """The event's kind, type, data and (a self-describing event's) schema."""
    if type(params) is not dict:
        raise MappingRejected("an event must be a JSON object of parameters")
    kind = params.get("e")
    if type(kind) is not str or kind not in EVENT_TYPES:
        raise MappingRejected("`e` must be one of " + ", ".join(EVENT_TYPES))
    event_type, data, schema = EVENT_TYPES[kind], None, None
    if kind == "ue":
        event_type, data, schema = _self_describing(params)
    elif kind == "se":
        data = {name: params[key] for key, name in STRUCTURED.items() if key in params}
    elif kind == "pp":
        data = {name: params[key] for key, name in PING.items() if key in params}
    elif kind in ("tr", "ti"):
        data = {k: v for k, v in params.items() if k.startswith(kind + "_")}
    return kind, event_type, data, schema


def _extra(params: dict[str, Any], kind: str, schema: str | None) -> dict[str, Any]:
    """What is kept in `extra`: the schema, the contexts, every other parameter and the device's own times (None
    values dropped, as the /collect dict's are)."""
    contexts = _contexts(params) if "co" in params or "cx" in params else None
    if kind not in ("tr", "ti") and "schema" not in params and "contexts" not in params:
        # The usual event (no parameter landing on the keys set first): the same dict built faster, unless a None
        # is to be dropped (a None set first and then replaced keeps its place: the full build below decides).
        extra: dict[str, Any] = {} if schema is None else {"schema": schema}
        if contexts is not None:
            extra["contexts"] = contexts
        extra.update({
            (n if n not in KNOWN_FIELDS else "snowplow_" + n): v for n, v in params.items() if n not in CONSUMED
        })  # fmt: skip
        for name in ("dtm", "stm", "ttm"):
            if name in params:
                extra[name] = params[name]
        if None not in extra.values():
            return extra
    extra = {"schema": schema, "contexts": contexts}
    for name, value in params.items():
        if name not in CONSUMED and not (kind in ("tr", "ti") and name.startswith(kind + "_")):
            extra[name if name not in KNOWN_FIELDS else f"snowplow_{name}"] = value
    for name in ("dtm", "stm", "ttm"):  # the device's own times, as sent (the timestamp is derived from them)
        if name in params:
            extra[name] = params[name]
    return drop_none(extra)


def _encoded_time(enc: RowEncoder, times: tuple[Any, Any, Any], params: Any, received: datetime) -> bytes | None:
    """rows.timestamp(_time(...)) in integer microseconds when every given time is digits within SAFE_MILLIS (each
    event of a real batch has its own `dtm`: building datetimes for each cost more than the rest of its row)."""
    ttm, dtm, stm = times
    ttm = None if ttm is None else _millis(ttm)
    dtm = None if dtm is None else _millis(dtm)
    stm = None if stm is None else _millis(stm)
    if ttm is _UNSAFE or dtm is _UNSAFE or stm is _UNSAFE:
        return rows.timestamp(_time(params, received))
    if ttm is not None:
        return rows.timestamp_us(ttm * 1000)
    if dtm is None:
        return None
    if stm is None:
        return rows.timestamp_us(dtm * 1000)
    return enc.corrected(dtm * 1000, stm * 1000, received)


def _millis(value: Any) -> Any:
    """from_millis's milliseconds as an int; None where it gives None; _UNSAFE past SAFE_MILLIS (its float division
    may miss the exact millisecond there: the datetime path decides)."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 15:
        millis = int(value)
        return millis if millis < SAFE_MILLIS else _UNSAFE
    return None


def _time(params: dict[str, Any], received: datetime) -> datetime | None:
    """`ttm` (the true time), else `dtm` corrected by `stm` as Snowplow's derived_tstamp."""
    true_time = from_millis(params.get("ttm"))
    return true_time or skew_corrected(from_millis(params.get("dtm")), from_millis(params.get("stm")), received)


def _site(app_id: Any, url: Any) -> str | None:
    """`aid` as a host name; without one, the page's host. An `aid` that is not a host name names no site."""
    if app_id is None or app_id == "":
        return host_of_url(url)
    domain = normalize_domain(app_id) if type(app_id) is str else None
    if domain is None:
        raise MappingRejected("`aid` (the app id) must be the site's domain, e.g. shop.example.com")
    return domain


def _self_describing(params: dict[str, Any]) -> tuple[str, Any, str]:
    """A `ue` event's name (from its schema URI), data and schema."""
    wrapper = _json_param(params, "ue_pr", "ue_px")
    inner = wrapper.get("data") if type(wrapper) is dict else None
    schema = inner.get("schema") if type(inner) is dict else None
    if type(schema) is not str or not schema.startswith("iglu:"):
        raise MappingRejected("`ue_pr`/`ue_px` must hold a self-describing event {schema: iglu:..., data: {...}}")
    parts = schema[5:].split("/")
    if len(parts) != 4 or not parts[1]:
        raise MappingRejected(f"the schema {schema[:200]!r} is not iglu:vendor/name/format/version")
    assert type(inner) is dict
    return parts[1], inner.get("data"), schema


def _contexts(params: dict[str, Any]) -> Any:
    """The entities of `co` (or base64 `cx`): the payload's `data` array, kept in `extra` as `contexts`."""
    if "co" not in params and "cx" not in params:
        return None
    wrapper = _json_param(params, "co", "cx")
    return wrapper.get("data", wrapper) if type(wrapper) is dict else wrapper


def _json_param(params: dict[str, Any], plain: str, encoded: str) -> Any:
    """A JSON parameter, plain or URL-safe base64 (padding optional, as the trackers send it)."""
    value = params.get(plain)
    try:
        if value is None:
            raw = params.get(encoded)
            if type(raw) is not str:
                raise MappingRejected(f"`{plain}` or `{encoded}` is required")
            value = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        elif type(value) is not str:
            return value  # already JSON (a POST payload may carry it as an object)
        return orjson.loads(value)
    except (binascii.Error, ValueError) as exc:
        raise MappingRejected(f"`{plain}`/`{encoded}` is not valid (base64) JSON: {str(exc)[:100]}") from None
