"""Requests for the front doors' differential tests (test_protocol_rows.py): every call and event type, ids given
and missing, odd types, too-long fields, clock skew, unknown fields, contexts, several sites, addresses and agents in
one request, and the hostile-input corpus of tests/security/test_protocol_inputs.py.

Sites: acme.com and shop.acme.com (standard), eu-shop.com (gdpr: hashed addresses), no-ip.com (no addresses),
cookieless.com (server-derived visitor ids) and opt-in.com (no ids without consent): the last two take the /collect
dict path inside Ingest, whatever the encoder did.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from tests.security.test_protocol_inputs import JUNK_VALUES, SCHEMA, segment_bodies, snowplow_events

KEY = "wkAcmeServer0001"
SITES = ("acme.com", "shop.acme.com", "eu-shop.com", "no-ip.com", "cookieless.com", "opt-in.com")
UUID = "0b5f3c2e-8d1a-4c6e-9f7b-2a4d6e8f0a1c"
DEEP: Any = {"leaf": 1}
for _ in range(70):
    DEEP = {"d": DEEP}
TIMES = [
    ("2026-03-01T10:00:00.123456Z", "2026-03-01T10:00:05.000Z"),  # sub-millisecond digits, 5 s of skew
    ("2026-03-01T10:00:00+02:00", None),  # an offset, no send time: the device's time as given
    ("2026-03-01T10:00:00", "2026-03-01T09:00:00"),  # naive (UTC), sent an hour before it occurred
    ("1969-12-31T23:59:59.999Z", None),  # before 1970: /collect refuses it
    ("3000-01-01T00:00:00Z", None),  # past 2999
    ("0001-01-01T00:00:00+01:00", None),  # year 0 in UTC
    ("9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z"),  # a send time millennia off
    ("not a time", "2026-03-01T10:00:05Z"),
    (12345, None),
    ("", ""),
]


def _track(site: str = "acme.com", **fields: Any) -> dict[str, Any]:
    page = {"url": f"https://{site}/pricing?plan=pro", "path": "/pricing", "referrer": "https://search.example/q"}
    message = {"type": "track", "event": "Signed Up", "anonymousId": "anon-1", "properties": {"plan": "pro"},
               "context": {"page": page, "library": {"name": "analytics.js", "version": "5.0.0"}}}  # fmt: skip
    return {**message, **fields}


def segment_requests() -> list[tuple[str, Any]]:
    """(path, body) of Segment requests: each call type, with and without ids, and what may go wrong."""
    calls: list[dict[str, Any]] = [
        _track(messageId=UUID),
        _track(messageId="ajs-next-1f2e3d"),
        _track(messageId=42),
        _track(messageId=UUID.upper()),
        {"type": "page", "name": "Pricing", "properties": {"url": "https://acme.com/p", "title": "P"}, "userId": "u1"},
        {"type": "page", "anonymousId": "a", "context": {"page": {"url": "https://shop.acme.com/x?y#z"}}},
        {"type": "screen", "name": "Home", "properties": {"a": [1, 2]}, "userId": 7, "messageId": "s-1"},
        {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com", "plan": None}},
        {"type": "group", "groupId": "g1", "traits": {"name": "Acme"}, "anonymousId": 1.5},
        {"type": "alias", "previousId": "anon-1", "userId": "u1"},
        _track(event="batch"),
        _track(event="  "),
        _track(event="x" * 101),
        _track(event="x" * 100),
        _track(event="nul\u0000"),
        _track(anonymousId="v" * 257),
        _track(anonymousId={"id": 1}),
        _track(anonymousId="", userId=["u"]),
        _track(properties=[1, 2]),
        _track(properties="plan=pro"),
        _track(properties={f"k{i}": i for i in range(101)}),
        _track(properties={"deep": DEEP}),
        _track(properties={"nul": "a\u0000b", "escaped": "a\\u0000b"}),
        _track(properties={"big": "x" * 70_000}),
        _track(context={"page": {"url": "https://acme.com/" + "p" * 9000}}),
        _track(context={"page": {"url": "https://acme.com/a", "path": "/" + "p" * 4100}}),
        _track(context={"page": {"url": "https://acme.com/a", "referrer": "r" * 8193}}),
        _track(context={"page": {"url": "https://acme.com/a", "referrer": "r" * 8100, "path": "/" + "p" * 4000}}),
        _track(context={"page": {"url": "https://acme.com/" + "u" * 3000}}),
        _track(context={"page": {"url": "ftp://acme.com/a"}}),
        _track(context={"page": {"url": 5, "path": 6, "referrer": 7}}),
        _track(context={"page": {"url": ""}, "ip": "198.51.100.9", "userAgent": "Agent/2"}),
        _track(context={"ip": "not an ip", "userAgent": 5, "locale": "en-US"}),
        _track(context="junk"),
        _track(site="eu-shop.com", context={"page": {"url": "https://eu-shop.com/"}, "ip": "198.51.100.23"}),
        _track(site="no-ip.com", context={"page": {"url": "https://no-ip.com/"}, "ip": "198.51.100.24"}),
        _track(site="cookieless.com", context={"page": {"url": "https://cookieless.com/"}}),
        _track(site="opt-in.com", context={"page": {"url": "https://opt-in.com/"}}),
        _track(context={"page": {"url": "https://nobody.example/"}}),
        _track(siteId="evil.com", url="u", consent={"analytics": False}, webdriver=True, eventType="x", extra=1),
        _track(integrations={"All": False}, channel="server", version=2, unknown={"a": None}, writeKey=KEY),
        _track(receivedAt="2026-01-01T00:00:00Z", originalTimestamp="x", _metadata={"bundled": []}),
        _track(nothing=None, sentAt=None),
        {"type": "nonsense"},
        "not an object",
        {"type": "track"},
    ]
    calls += [_track(timestamp=t, sentAt=s) for t, s in TIMES]
    requests: list[tuple[str, Any]] = [("/v1/batch", {"batch": [m]}) for m in calls]
    requests += [(f"/v1/{m['type']}", m) for m in calls[:10] if isinstance(m, dict)]
    requests += [
        ("/v1/batch", {"batch": calls[:12], "sentAt": "2026-03-01T10:00:05Z"}),
        (
            "/v1/batch",
            {
                "batch": [_track(messageId=str(uuid.UUID(int=i)), timestamp=TIMES[0][0]) for i in range(20)],
                "sentAt": TIMES[0][1],
                "context": {"library": {"name": "analytics-python"}},
                "integrations": {"x": True},
            },
        ),
        (
            "/v1/batch",
            {
                "batch": [
                    _track(site=s, context={"page": {"url": f"https://{s}/"}, "ip": f"192.0.2.{i % 3}"})
                    for i, s in enumerate(SITES * 3)
                ]
            },
        ),
        ("/v1/batch", {"batch": [_track(), _track(properties=[1]), _track(), _track(event="x" * 101)]}),
        (
            "/v1/batch",
            {
                "batch": [
                    _track(context={"page": {"url": "https://acme.com/" + "u" * 8000, "referrer": "r" * 8000}})
                    for _ in range(2)
                ]
            },
        ),
        ("/v1/batch", {"batch": [{**_track(), "context": "junk"}], "context": {"a": 1}}),
        ("/v1/track", {"event": "e", "anonymousId": "a"}),
        # Each message its own time (as a real batch's), one sentAt for all; then each its own sentAt too.
        (
            "/v1/batch",
            {
                "batch": [
                    _track(timestamp=f"2026-03-01T10:00:{i:02d}.{i * 37:03d}{i * 11 % 1000:03d}+0{i % 3}:00")
                    for i in range(20)
                ],
                "sentAt": "2026-03-01T10:01:00.5Z",
            },
        ),
        ("/v1/batch", {"batch": [_track(timestamp=t, sentAt=s) for t, s in TIMES * 2]}),
        (
            "/v1/batch",
            {"batch": [_track(timestamp="2016-01-01T00:00:00Z") for _ in range(3)], "sentAt": "2026-03-01T10:00:00Z"},
        ),
    ]

    return requests + [(path, body) for path, body in segment_bodies()]


def _tp2(*events: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "data": list(events)}


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def snowplow_requests() -> list[dict[str, Any]]:
    """tp2 bodies: each event type, ids, times, contexts, and the hostile events."""
    ue = {"schema": "iglu:x/unstruct_event/jsonschema/1-0-0",
          "data": {"schema": "iglu:com.acme/signup/jsonschema/1-0-0", "data": {"plan": "x"}}}  # fmt: skip
    co = {
        "schema": "iglu:x/contexts/jsonschema/1-0-0",
        "data": [{"schema": "iglu:x/web_page/1-0-0", "data": {"id": 1}}],
    }
    base = {"aid": "acme.com", "url": "https://acme.com/pricing?x=1", "duid": "d-1", "sid": "s-1", "p": "web",
            "tv": "js-3.0.0", "dtm": "1767225600000", "stm": "1767225601000",
            "refr": "https://search.example/"}  # fmt: skip
    events: list[Any] = [
        {**base, "e": "pv", "eid": UUID},
        {**base, "e": "pv", "eid": "not-a-uuid"},
        {**base, "e": "pp", "pp_mix": "0", "pp_max": "10", "pp_miy": "1", "pp_may": "2"},
        {**base, "e": "se", "se_ca": "ui", "se_ac": "click", "se_la": "b", "se_pr": "p", "se_va": "1.5"},
        {**base, "e": "ue", "ue_px": _b64(ue), "cx": _b64(co)},
        {**base, "e": "ue", "ue_pr": json.dumps(ue), "co": json.dumps(co)},
        {**base, "e": "ue", "ue_pr": ue, "co": co},
        {**base, "e": "tr", "tr_id": "o1", "tr_tt": "9.99", "tr_cu": "EUR"},
        {**base, "e": "ti", "ti_id": "o1", "ti_sk": "sku", "ti_pr": "9.99", "ti_qu": "1", "ti_nm": None},
        {**base, "e": "pv", "ttm": "1767225500123"},
        {**base, "e": "pv", "dtm": "1767225600123", "stm": None},
        {**base, "e": "pv", "dtm": 1767225600000},
        {**base, "e": "pv", "dtm": "999999999999999"},
        {**base, "e": "pv", "dtm": "1"},
        {**base, "e": "pv", "ip": "198.51.100.7", "ua": "Tracker/1"},
        {**base, "e": "pv", "aid": "eu-shop.com", "ip": "198.51.100.8"},
        {**base, "e": "pv", "aid": "cookieless.com"},
        {**base, "e": "pv", "aid": "opt-in.com"},
        {**base, "e": "pv", "aid": None, "url": "https://shop.acme.com/"},
        {**base, "e": "pv", "sid": "s" * 257},
        {**base, "e": "pv", "duid": 5, "sid": ""},
        {**base, "e": "pv", "url": "https://acme.com/" + "u" * 9000},
        {**base, "e": "pv", "refr": None, "schema": "mine", "contexts": None},
        {**base, "e": "pv", "siteId": "x", "path": "/p", "eventType": "t", "snowplow_path": "/q", "extra": None},
        {**base, "e": "ue", "ue_pr": json.dumps({"data": {"schema": "iglu:a/batch/jsonschema/1-0-0", "data": {}}})},
        {**base, "e": "ue", "ue_pr": json.dumps({"data": {"schema": "iglu:a/b/jsonschema/1-0-0", "data": [1]}})},
    ]
    events += [
        {**base, "e": "pv", "co": json.dumps(co)},
        {**base, "e": "se", "se_ca": "c", "cx": _b64(co), "path": "/p", "snowplow_path": "/q"},
        {**base, "e": "pp", "pp_mix": "0", "co": "{not json"},
        {**base, "e": "pp", "eid": ["x"], "co": "{not json"},
    ]
    requests = [_tp2(e) for e in events]
    # Each event its own device time (as a real batch's), sent together; a clock ten years off; times either side of
    # the integer path's bound (rows encoded from milliseconds without datetimes below 2^33 s).
    requests.append(_tp2(*[{**base, "e": "pv", "dtm": str(1767225600000 + i * 7919 + 3)} for i in range(20)]))
    requests.append(_tp2(*[{**base, "e": "pv", "ttm": str(1767225500000 + i * 104729)} for i in range(5)]))
    for dtm, stm in (("1451606400000", "1767225601000"), ("8589934591999", None), ("8589934592000", None),
                     ("8589934591999", "8589934592001"), ("0", None), ("999", "1000")):  # fmt: skip
        requests.append(_tp2({**base, "e": "pv", "dtm": dtm, "stm": stm}))
    # One shape, values that differ (a None among them): each event still maps as alone.
    requests.append(_tp2({**base, "e": "se", "se_ca": "a"}, {**base, "e": "se", "se_ca": None},
                         {**base, "e": "se", "se_ca": "b", "tv": None}, {**base, "e": "se", "se_ca": 5}))  # fmt: skip
    requests.append(_tp2(*[{**base, "e": "pv", "eid": str(uuid.UUID(int=i))} for i in range(20)]))
    requests.append(_tp2(*events[:8]))
    requests.append(_tp2(*[{**base, "e": "pv", "aid": s, "ip": f"192.0.2.{i % 2}"} for i, s in enumerate(SITES * 2)]))
    requests += [_tp2(e) for e in snowplow_events()]
    return requests


def snowplow_queries() -> list[dict[str, str]]:
    """GET /i query strings (every value text)."""
    return [
        {"e": "pv", "aid": "acme.com", "url": "https://acme.com/", "eid": UUID, "dtm": "1767225600000"},
        {"e": "se", "aid": "acme.com", "se_ca": "c", "se_ac": "a", "tv": "js"},
        {"e": "pv", "aid": "nobody.example"},
        {"e": "xx", "aid": "acme.com"},
        {"e": "pv", "aid": "acme.com", "ue_pr": "{"},
    ]


def plausible_requests() -> list[Any]:
    """Plausible bodies, long and short names, one site and several, and each field junk in turn."""
    base = {"name": "pageview", "url": "https://acme.com/a?b=c", "domain": "acme.com", "referrer": "https://r.example/"}
    bodies: list[Any] = [
        base,
        {"n": "pageview", "u": "https://acme.com/", "d": "acme.com", "r": None, "w": 1280, "h": 1, "i": True},
        {**base, "name": "Signup", "props": {"plan": "pro"}, "revenue": {"currency": "EUR", "amount": 9}},
        {**base, "p": json.dumps({"plan": "pro"})},
        {**base, "m": "{not json"},
        {**base, "props": [1]},
        {**base, "props": {f"k{i}": i for i in range(101)}},
        {**base, "domain": "acme.com,shop.acme.com,eu-shop.com"},
        {**base, "domain": "acme.com,acme.com"},
        {**base, "domain": "acme.com,nobody.example"},
        {**base, "domain": "cookieless.com"},
        {**base, "domain": "opt-in.com"},
        {**base, "name": "batch"},
        {**base, "name": "x" * 101},
        {**base, "url": "https://acme.com/" + "u" * 9000},
        {**base, "referrer": "r" * 9000},
        {**base, "siteId": "x", "eventId": UUID, "timestamp": "2026-01-01T00:00:00Z", "consent": {"a": 1}},
    ]
    for name in ("name", "url", "domain", "referrer", "props", "revenue", "n", "u", "d", "p", "m", "$"):
        for value in [*JUNK_VALUES, "{not json", ",".join(["acme.com"] * 50)]:
            bodies.append({**base, name: value})
    return bodies
