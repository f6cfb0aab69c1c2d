"""DomainAuthorizer: which client a domain belongs to, from pixel-management or a file, behind a TTL cache."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from cachetools import LRUCache

from collector.errors import AuthorizationUnavailable, DomainNotAuthorized
from collector.ingest.flights import SingleFlight
from collector.ingest.sites import InvalidSiteConfig, SiteConfig, normalize_domain
from collector.jsonfile import read_json_object
from collector.logsafe import for_log

logger = logging.getLogger(__name__)

DEFAULT_DOMAINS_FILE = Path(__file__).with_name("authorized_domains.json")
# The negative cache holds up to max_entries // NEGATIVE_SHARE refusals (10,000 of the default 100,000).
NEGATIVE_SHARE = 10


class DirectoryUnavailable(Exception):
    """The directory could not answer; this says nothing about the domain."""


class DomainDirectory(Protocol):
    """Where authorization decisions come from."""

    async def lookup(self, domain: str) -> dict[str, Any] | None:
        """The domain's config, None if it is not authorized; raise DirectoryUnavailable if unknown."""
        ...

    async def lookup_client(self, client_id: str) -> dict[str, Any] | None:
        """A client's config (processing needs its privacy level), None if unknown; DirectoryUnavailable likewise."""
        ...

    async def lookup_write_key(self, key: str) -> dict[str, Any] | None:
        """The config of the client a write key belongs to, with the `domain` its server-side events are
        attributed to (docs/protocols.md), None if no client has it; DirectoryUnavailable likewise."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


class PixelManagementDirectory:
    """The pixel-management API over one shared aiohttp session."""

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"accept": "application/json"},
            raise_for_status=False,
        )

    async def lookup(self, domain: str) -> dict[str, Any] | None:
        return await self._get(f"{self._base}/api/v1/config/domain/{domain}")

    async def lookup_client(self, client_id: str) -> dict[str, Any] | None:
        return await self._get(f"{self._base}/api/v1/config/client/{quote(client_id, safe='')}")

    async def lookup_write_key(self, key: str) -> dict[str, Any] | None:
        return await self._get(f"{self._base}/api/v1/config/write_key/{quote(key, safe='')}")

    async def _get(self, url: str) -> dict[str, Any] | None:
        try:
            async with self._session.get(url) as response:
                if response.status in (400, 404):
                    return None
                if response.status != 200:
                    raise DirectoryUnavailable(f"pixel-management answered {response.status}")
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DirectoryUnavailable(f"pixel-management unreachable: {exc!r}") from exc
        try:
            config = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DirectoryUnavailable("pixel-management answered invalid JSON") from exc
        if not isinstance(config, dict):
            raise DirectoryUnavailable("pixel-management answered a non-object")
        return config

    async def close(self) -> None:
        await self._session.close()

    def describe(self) -> str:
        return f"pixel-management at {self._base}"


# What a domain given in AUTHORIZED_DOMAINS is configured with (as localhost is in the development defaults).
DEV_SITE_POLICY: dict[str, Any] = {
    "privacy_level": "standard",
    "ip_collection": {"enabled": True, "hash_required": False, "salt": None},
    "consent": {"required": False, "default_behavior": "allow"},
    "features": {},
    "deployment": {"type": "shared", "hostname": None},
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# What a write key may look like (Segment's are 32 letters and digits, RudderStack's 27): fullmatch.
WRITE_KEY = re.compile(r"[A-Za-z0-9_-]{8,128}")


def default_client_id(domain: str) -> str:
    """The client a domain given without one in AUTHORIZED_DOMAINS belongs to: named after it, `www.` dropped, so
    that a site's apex and www host are one client (shop.example.com → client_shop_example_com)."""
    return "client_" + _NOT_ALNUM.sub("_", domain.removeprefix("www."))[:100].strip("_")


class FileDirectory:
    """Domain → the config pixel-management would return (development mode), from layers that each add domains, a
    later one's entry for the same domain winning: JSON files (the development defaults, AUTHORIZED_DOMAINS_FILE),
    then the AUTHORIZED_DOMAINS entries (`domain` or `domain=client_id`).

    A malformed file or entry raises ValueError with one line naming the variable, the file and the entry.
    """

    def __init__(self, files: Sequence[tuple[str, Path]], ip_hash_secret: str, domains: Sequence[str] = ()) -> None:
        self._sources = [f"{variable} {path}" for variable, path in files]
        self._configs: dict[str, dict[str, Any]] = {}
        self._write_keys: dict[str, dict[str, Any]] = {}
        for variable, path in files:
            raw = read_json_object(path, variable, "domain names to config objects")
            for name, config in raw.items():
                self._add(f"{variable} {path}: {name!r}", name, config, ip_hash_secret)
        for entry in domains:
            name, _, client_id = entry.partition("=")
            domain = normalize_domain(name)
            config = {"client_id": client_id or default_client_id(domain or ""), **DEV_SITE_POLICY}
            self._add(f"AUTHORIZED_DOMAINS: {entry!r}", name, config, ip_hash_secret)
        if domains:
            self._sources.append("AUTHORIZED_DOMAINS")

    def _add(self, where: str, name: str, config: Any, ip_hash_secret: str) -> None:
        domain = normalize_domain(name)
        if domain is None:
            raise ValueError(f"{where} is not a domain name")
        if isinstance(config, dict) and "client_id" not in config:
            raise ValueError(f"{where} has no client_id")
        try:
            SiteConfig.from_config(config, ip_hash_secret)
        except InvalidSiteConfig as exc:
            raise ValueError(f"{where}: {exc}") from None
        self._configs[domain] = config
        self._add_write_keys(where, domain, config)

    def _add_write_keys(self, where: str, domain: str, config: dict[str, Any]) -> None:
        """Index a domain's `write_keys` (docs/protocols.md): each names its client, and this domain as its site."""
        keys = config.get("write_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and WRITE_KEY.fullmatch(k) for k in keys):
            raise ValueError(f"{where}: write_keys must be a list of keys of 8 to 128 letters, digits, - or _")
        for key in keys:
            self._write_keys[key] = {**config, "domain": domain}

    async def lookup(self, domain: str) -> dict[str, Any] | None:
        return self._configs.get(domain)

    async def lookup_write_key(self, key: str) -> dict[str, Any] | None:
        return self._write_keys.get(key)

    async def lookup_client(self, client_id: str) -> dict[str, Any] | None:
        return next((c for c in self._configs.values() if c.get("client_id") == client_id), None)

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"{' + '.join(self._sources)} ({len(self._configs)} domains)"


@dataclass(slots=True)
class _Entry:
    site: SiteConfig | None
    fetched_at: float


@dataclass(slots=True)
class AuthStats:
    hits: int = 0
    misses: int = 0
    stale_served: int = 0
    lookups: int = 0
    lookup_failures: int = 0


class DomainAuthorizer:
    """Cached, single-flight authorization: fresh decisions from memory, one lookup per domain at a time.

    Positive decisions live `ttl_s`, negative ones `negative_ttl_s` (so a newly registered domain works
    soon). While the directory is unavailable the last decision is served up to `stale_max_s` old;
    with none, authorize() raises AuthorizationUnavailable (503), never DomainNotAuthorized.
    """

    def __init__(
        self,
        directory: DomainDirectory,
        *,
        ip_hash_secret: str,
        ttl_s: float,
        negative_ttl_s: float,
        stale_max_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_lookup = on_lookup  # seconds of each directory lookup (per cache miss, not per request)
        self._secret = ip_hash_secret
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._stale_max = stale_max_s
        # Positive and negative decisions live apart: a flood of unknown (junk) domains evicts only other negative
        # entries, never an authorized domain whose entry stale-if-error needs during a pixel-management outage.
        # Keys are normalized host names (at most 253 bytes), so each entry is bounded: ~0.5 KB a negative one.
        self._cache: LRUCache[str, _Entry] = LRUCache(maxsize=max_entries)
        self._negative: LRUCache[str, _Entry] = LRUCache(maxsize=max(1, max_entries // NEGATIVE_SHARE))
        self._flights: SingleFlight[_Entry] = SingleFlight()
        self._clock = clock
        self.stats = AuthStats()

    async def authorize(self, domain: str) -> SiteConfig:
        """The site config of an authorized `domain` (already normalized)."""
        entry = self._cache.get(domain) or self._negative.get(domain)
        now = self._clock()
        if entry is not None and now - entry.fetched_at < (self._ttl if entry.site else self._negative_ttl):
            self.stats.hits += 1
            return _decide(domain, entry)
        self.stats.misses += 1
        try:
            entry = await self._flights.run(domain, lambda: self._fetch(domain))
        except DirectoryUnavailable as exc:
            if entry is not None and now - entry.fetched_at < self._stale_max:
                self.stats.stale_served += 1
                return _decide(domain, entry)
            raise AuthorizationUnavailable(f"cannot check domain {domain} right now: {exc}") from None
        return _decide(domain, entry)

    async def _fetch(self, domain: str) -> _Entry:
        self.stats.lookups += 1
        started = time.perf_counter()
        try:
            try:
                config = await self.directory.lookup(domain)
            finally:
                if self._on_lookup is not None:
                    self._on_lookup(time.perf_counter() - started)
            site = None if config is None else SiteConfig.from_config(config, self._secret)
        except InvalidSiteConfig as exc:
            self.stats.lookup_failures += 1
            logger.error(
                "Domain %s: unusable config from %s: %s", for_log(domain), self.directory.describe(), for_log(str(exc))
            )
            raise DirectoryUnavailable(str(exc)) from None
        except DirectoryUnavailable as exc:
            self.stats.lookup_failures += 1
            logger.warning("Domain %s: authorization lookup failed: %s", for_log(domain), for_log(str(exc)))
            raise
        entry = _Entry(site, self._clock())
        if site is None:
            self._cache.pop(domain, None)
            self._negative[domain] = entry
            # DEBUG: a flood of unknown domains must not become a flood of log lines.
            logger.debug("Domain %s is not authorized", for_log(domain))
        else:
            self._negative.pop(domain, None)
            self._cache[domain] = entry
            logger.info("Domain %s authorized for client %s", domain, site.client_id)
        return entry

    async def close(self) -> None:
        """Cancel lookups in flight, then close the directory."""
        await self._flights.cancel()
        await self.directory.close()


def _decide(domain: str, entry: _Entry) -> SiteConfig:
    if entry.site is None:
        raise DomainNotAuthorized(f"domain {domain} is not authorized to send events")
    return entry.site
