"""Sites: domain normalization and the per-client configuration that pixel-management returns."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

IpMode = Literal["store", "hash", "none"]

_LABELS = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
# Development only (production refuses to start without IP_HASH_SECRET): hashes made with it are not secret.
DEV_IP_HASH_SECRET = "development-only-ip-hash-secret"

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@lru_cache(maxsize=8192)
def normalize_domain(value: str) -> str | None:
    """`value` as a bare lower-case host (no scheme, path, port or trailing dot), or None if it is not one."""
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
    return host if _LABELS.match(host) else None


def _ip_literal(value: str) -> str | None:
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

    @classmethod
    def from_config(cls, config: Any, ip_hash_secret: str) -> SiteConfig:
        """Validate a pixel-management config object; raise InvalidSiteConfig if it is unusable."""
        if not isinstance(config, dict):
            raise InvalidSiteConfig("the config is not a JSON object")
        client_id = config.get("client_id")
        if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
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
        return cls(client_id, privacy, mode, key, config)

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
