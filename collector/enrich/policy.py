"""EnrichPolicy: what a client's configuration (`privacy_level`, `features`) asks of enrichment, read once per config.

The client's `features` (pixel-management's free-form object) may hold:
- `bots`: "flag" (default: every row carries its verdict) or "drop" (bot rows are counted, not stored);
- `bot_ip_exclusions`: a list of CIDRs (or addresses) whose traffic is the client's own (office, monitoring):
  flagged as bots with reason `ip_excluded`, or dropped with the rest under "drop";
- `cookieless`: true to derive visitor ids on the server (collector.ingest.consent).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_IP_EXCLUSIONS = 256  # a client's list is searched per request that misses the cache: keep it short


class InvalidPolicy(ValueError):
    """The client's `features` hold a value enrichment cannot use."""


@dataclass(frozen=True, slots=True)
class EnrichPolicy:
    """One client's enrichment rules; shared by every request of theirs (built with its SiteConfig)."""

    client_id: str
    privacy_level: str  # standard / gdpr / hipaa: how much detail is kept
    drop_bots: bool
    ip_exclusions: tuple[Network, ...]

    @classmethod
    def from_config(cls, client_id: str, privacy_level: str, features: Any) -> EnrichPolicy:
        if features is None:
            features = {}
        if not isinstance(features, dict):
            raise InvalidPolicy("features is not an object")
        mode = features.get("bots", "flag")
        if mode not in ("flag", "drop"):
            raise InvalidPolicy(f"features.bots {mode!r} is neither 'flag' nor 'drop'")
        raw = features.get("bot_ip_exclusions") or []
        if not isinstance(raw, list) or len(raw) > MAX_IP_EXCLUSIONS:
            raise InvalidPolicy(f"features.bot_ip_exclusions must be a list of at most {MAX_IP_EXCLUSIONS} CIDRs")
        try:
            networks = tuple(ipaddress.ip_network(str(item), strict=False) for item in raw)
        except ValueError as exc:
            raise InvalidPolicy(f"features.bot_ip_exclusions: {exc}") from None
        return cls(client_id, privacy_level, mode == "drop", networks)

    def excludes(self, ip: str | None) -> bool:
        """Whether `ip` is one of the client's own excluded addresses."""
        if not self.ip_exclusions or ip is None:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.ip_exclusions)


# What ingest hands storage per request, beside its rows (a plain tuple: it is built on the request loop):
# (policy, the User-Agent as received, the client's full address, a trusted CDN's country header, the tracker's
# automation flag). The address never reaches disk from here; it is only looked up.
EnrichRequest = tuple[EnrichPolicy, str | None, str | None, str | None, bool]
