"""Sites: domain normalization and the per-client configuration that pixel-management returns."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from collector.enrich.policy import EnrichPolicy, InvalidPolicy
from collector.ingest.consent import ConsentPolicy, InvalidConsentConfig

# Re-exported for whoever imported it here; Settings owns it (Settings.hash_secret falls back to it).
from collector.settings import DEV_IP_HASH_SECRET as DEV_IP_HASH_SECRET

IpMode = Literal["store", "hash", "none"]

# A host name: labels of letters, digits and hyphens (and `_`, which DNS allows), 1 to 63 bytes each, not starting or
# ending with a hyphen, 253 bytes in all. Used with fullmatch (`$` would accept a trailing newline); its only
# repetition is bounded per label, so it runs in time linear in the input, which is cut before it runs anyway.
_LABELS = re.compile(r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # fullmatch: no trailing newline

# The longest siteId (or Origin / Referer prefix) normalize_domain looks at: a 253-byte host with a scheme, user
# info, port and trailing dot fits easily; anything longer is refused before it is stripped, cached or logged.
MAX_DOMAIN_INPUT_CHARS = 512
# normalize_domain's cache: entries of at most MAX_DOMAIN_INPUT_CHARS characters (key) and 253 (value), so at most
# ~4,096 x 2.5 KB = 10 MB even with 4-byte characters; cleared when full, so junk cannot pin names either.
DOMAIN_CACHE_ENTRIES = 4096


class _DomainCache(dict[str, str | None]):
    """Normalized domains by raw value. A hit is one C-level dict lookup (no Python frame: this is per request);
    a miss normalizes, and caches only values short enough to be a domain."""

    def __missing__(self, value: str) -> str | None:
        if len(value) > MAX_DOMAIN_INPUT_CHARS:
            return None
        domain = _normalize(value)
        if len(self) >= DOMAIN_CACHE_ENTRIES:
            self.clear()
        self[value] = domain
        return domain


_DOMAINS = _DomainCache()
# `value` as a bare lower-case host (no scheme, path, port or trailing dot), or None if it is not one. A value
# longer than MAX_DOMAIN_INPUT_CHARS is refused before it is stripped, parsed or cached.
normalize_domain: Callable[[str], str | None] = _DOMAINS.__getitem__


def _normalize(value: str) -> str | None:
    host = value.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    for sep in "/?#":
        host = host.split(sep, 1)[0]
    host = host.rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
        return _ip_literal(host)
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    elif ":" in host:
        return _ip_literal(host)
    host = host.rstrip(".")
    return host if _LABELS.fullmatch(host) else None


def _ip_literal(value: str) -> str | None:
    # A zone id (`fe80::1%eth0`) names an interface of the sender's machine, not a site, and the ipaddress module
    # accepts any text after the `%`, control characters included.
    if "%" in value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


class InvalidSiteConfig(ValueError):
    """pixel-management (or the domains file) returned a config we cannot use."""


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """What the collector needs of a client's configuration, with the IP hashing key prepared once."""

    client_id: str
    privacy_level: str
    ip_mode: IpMode
    hash_key: bytes | None
    config: dict[str, Any]
    enrich: EnrichPolicy  # features.bots, features.bot_ip_exclusions (collector.enrich.policy)
    consent: ConsentPolicy  # consent.default_behavior, features.cookieless (collector.ingest.consent)

    @classmethod
    def from_config(cls, config: Any, ip_hash_secret: str) -> SiteConfig:
        """Validate a pixel-management config object; raise InvalidSiteConfig if it is unusable."""
        if not isinstance(config, dict):
            raise InvalidSiteConfig("the config is not a JSON object")
        client_id = config.get("client_id")
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            raise InvalidSiteConfig(f"client_id {client_id!r} is not a valid identifier")
        privacy = config.get("privacy_level", "standard")
        if privacy not in ("standard", "gdpr", "hipaa"):
            raise InvalidSiteConfig(f"privacy_level {privacy!r} is unknown")
        ip = config.get("ip_collection") or {}
        if not isinstance(ip, dict):
            raise InvalidSiteConfig("ip_collection is not an object")
        # gdpr and hipaa always hash, whatever the flag says: a raw IP of theirs must never reach disk.
        mode: IpMode
        if ip.get("enabled", True) is False:
            mode = "none"
        elif ip.get("hash_required") or privacy != "standard":
            mode = "hash"
        else:
            mode = "store"
        salt = ip.get("salt") or ""
        if not isinstance(salt, str):
            raise InvalidSiteConfig("ip_collection.salt is not a string")
        key = (ip_hash_secret + salt).encode() if mode == "hash" else None
        try:
            enrich = EnrichPolicy.from_config(client_id, privacy, config.get("features"))
            consent = ConsentPolicy.from_config(config, privacy)
        except (InvalidPolicy, InvalidConsentConfig) as exc:
            raise InvalidSiteConfig(str(exc)) from None
        return cls(client_id, privacy, mode, key, config, enrich, consent)

    def ip_columns(self, ip: str | None) -> tuple[str | None, str | None]:
        """The (ip, ip_hash) pair to store for a client address under this client's policy."""
        if ip is None or self.ip_mode == "none":
            return None, None
        if self.hash_key is not None:
            return None, hash_ip(self.hash_key, ip)
        return ip, None


def hash_ip(key: bytes, ip: str) -> str:
    """HMAC-SHA256 of the address, full length: short or unkeyed hashes of IPv4 are reversible."""
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()
