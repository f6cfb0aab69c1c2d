"""Consent: each request's consent state, what it lets ingest keep, and cookieless visitor ids.

The state comes from `Sec-GPC: 1` (Global Privacy Control; it wins over anything else) and the request's `consent`
object ({"analytics": bool, "marketing": bool}, on a single event or a batch's wrapper). When analytics consent is
not given, a request's rows keep no client-provided visitor or session id and no address, not even hashed; the
decision is made here, before those columns are encoded, so nothing of them reaches the buffer, the journal or disk.
docs/enrichment.md#consent documents the states and the client's `consent` and `features` settings read here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from collector.errors import InvalidEvent

GRANTED, DENIED, UNKNOWN, GPC = "granted", "denied", "unknown", "gpc"
# `consent.default_behavior` values under which a request that says nothing is treated as consenting: the seed's
# "allow", and "opt_out" (visitors are counted unless they opt out). Anything else ("opt_in", "deny") is not.
DEFAULT_ALLOWS = frozenset({"allow", "opt_out"})


class InvalidConsentConfig(ValueError):
    """The client's `consent` or `features.cookieless` is not usable."""


@dataclass(frozen=True, slots=True)
class ConsentPolicy:
    """A client's consent rules, read once from its configuration."""

    unknown_allowed: bool  # a request without a consent signal may keep identifiers
    cookieless: bool  # features.cookieless: visitor ids are always derived on the server
    gdpr: bool  # privacy_level gdpr: derived ids replace the visitor's own whenever consent is not given
    # The common case, decided with one attribute read per request: nothing to do unless the request says something.
    plain: bool

    @classmethod
    def from_config(cls, config: dict[str, Any], privacy_level: str) -> ConsentPolicy:
        consent = config.get("consent") or {}
        features = config.get("features") or {}
        if not isinstance(consent, dict) or not isinstance(features, dict):
            raise InvalidConsentConfig("consent and features must be objects")
        behavior = consent.get("default_behavior", "allow")
        cookieless = features.get("cookieless", False)
        if not isinstance(behavior, str) or not isinstance(cookieless, bool):
            raise InvalidConsentConfig("consent.default_behavior must be a string and features.cookieless a boolean")
        allowed = behavior in DEFAULT_ALLOWS
        return cls(allowed, cookieless, privacy_level == "gdpr", allowed and not cookieless)

    def allows(self, state: str) -> bool:
        """Whether a request in `state` may keep its client-provided ids and its address."""
        return state == GRANTED or (state == UNKNOWN and self.unknown_allowed)

    def derives(self, allowed: bool) -> bool:
        """Whether the visitor id is derived on the server (cookieless) rather than taken from the request."""
        return self.cookieless or (self.gdpr and not allowed)


def state_of(payload: dict[str, Any], gpc: bool) -> str:
    """The request's consent state; InvalidEvent if its `consent` is malformed."""
    if gpc:
        return GPC
    consent = payload.get("consent")
    if consent is None:
        return UNKNOWN
    if type(consent) is not dict:
        raise InvalidEvent('`consent` must be an object such as {"analytics": true, "marketing": false}')
    analytics, marketing = consent.get("analytics"), consent.get("marketing")
    if (analytics is not None and type(analytics) is not bool) or (
        marketing is not None and type(marketing) is not bool
    ):
        raise InvalidEvent("`consent.analytics` and `consent.marketing` must be true or false")
    if analytics is None:
        return UNKNOWN
    return GRANTED if analytics else DENIED


def cookieless_id(salt: bytes, site: str, ip: str, user_agent: str | None) -> str:
    """A visitor id for one day: keyed BLAKE2b of the site, address and user agent under the day's salt."""
    data = f"{site}\n{ip}\n{user_agent or ''}".encode(errors="replace")
    return hashlib.blake2b(data, key=salt, digest_size=16).hexdigest()


def scrub(payload: dict[str, Any], events: list[Any], *, keep_session: bool, visitor: str | None) -> None:
    """Remove the client-provided ids from the request (and set the derived visitor id, inherited by every event)."""
    for event in events if events and events[0] is not payload else ():
        if type(event) is dict:
            event.pop("visitorId", None)
            if not keep_session:
                event.pop("sessionId", None)
    payload.pop("visitorId", None)
    if not keep_session:
        payload.pop("sessionId", None)
    if visitor is not None:
        payload["visitorId"] = visitor
