"""Write keys: which client (and which of its sites) a front door's key names, from the directory, cached.

Segment's protocol names its sender by write key. A client has zero or more; pixel-management resolves one with
GET /api/v1/config/write_key/{key} (the client's config body plus the `domain` its server-side events belong to),
the development domains file with a `write_keys` list per domain (docs/protocols.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from collector.errors import AuthorizationUnavailable, InvalidWriteKey
from collector.ingest.auth import WRITE_KEY, DirectoryUnavailable, DomainDirectory
from collector.ingest.flights import SingleFlight
from collector.ingest.sites import InvalidSiteConfig, SiteConfig, normalize_domain

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriteKey:
    """A key's client, and the site its events without a page URL are attributed to (None: they name no site)."""

    client_id: str
    domain: str | None


@dataclass(slots=True)
class _Entry:
    key: WriteKey | None
    fetched_at: float


class WriteKeys:
    """Resolves write keys as DomainAuthorizer resolves domains: fresh answers from memory (`ttl_s`, wrong keys
    `negative_ttl_s`), the last answer up to `stale_max_s` while the directory is down, else 503, and one lookup per
    key at a time (SingleFlight, as for domains). Wrong keys live in a cache of their own, so a flood of them never
    evicts a real key. Keys are never logged."""

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
    ) -> None:
        self._directory = directory
        self._secret = ip_hash_secret
        self._ttl, self._negative_ttl, self._stale_max = ttl_s, negative_ttl_s, stale_max_s
        self._cache: LRUCache[str, _Entry] = LRUCache(maxsize=max(1, max_entries // 10))
        self._negative: LRUCache[str, _Entry] = LRUCache(maxsize=max(1, max_entries // 10))
        self._clock = clock
        self._flights: SingleFlight[_Entry] = SingleFlight()

    async def resolve(self, key: str | None) -> WriteKey:
        """The key's client; InvalidWriteKey (401) for none or an unknown one, AuthorizationUnavailable (503)."""
        if not key or not WRITE_KEY.fullmatch(key):
            raise InvalidWriteKey("send the source's write key (HTTP Basic user name, or `writeKey`)")
        entry = self._cache.get(key) or self._negative.get(key)
        now = self._clock()
        if entry is None or now - entry.fetched_at >= (self._ttl if entry.key else self._negative_ttl):
            try:
                entry = await self._flights.run(key, lambda: self._fetch(key))
            except DirectoryUnavailable as exc:
                if entry is None or now - entry.fetched_at >= self._stale_max:
                    raise AuthorizationUnavailable(f"cannot check the write key right now: {exc}") from None
        if entry.key is None:
            raise InvalidWriteKey("the write key is not one of any client's")
        return entry.key

    async def _fetch(self, key: str) -> _Entry:
        config = await self._directory.lookup_write_key(key)
        found = None
        if config is not None:
            try:
                client_id = SiteConfig.from_config(config, self._secret).client_id
            except InvalidSiteConfig as exc:
                logger.error("A write key's config from %s is unusable: %s", self._directory.describe(), exc)
                raise DirectoryUnavailable(str(exc)) from None
            domain = config.get("domain")
            found = WriteKey(client_id, normalize_domain(domain) if isinstance(domain, str) else None)
        entry = _Entry(found, self._clock())
        (self._cache if found else self._negative)[key] = entry
        (self._negative if found else self._cache).pop(key, None)
        return entry
