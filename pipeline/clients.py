"""Per-client settings for processing: privacy level and salt from pixel-management, and where objects go."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cachetools import TTLCache

from collector.jsonfile import read_json_object
from pipeline.objects import ObjectStore
from pipeline.privacy import LEVELS

logger = logging.getLogger(__name__)

# The strictest policy for a client pixel-management does not know (removed since its events were stored).
UNKNOWN_CLIENT_LEVEL = "hipaa"


class ClientDirectory(Protocol):
    """collector.auth's directories: a client's config, None if unknown; DirectoryUnavailable if it cannot say."""

    async def lookup_client(self, client_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Destination:
    """A client's own processed bucket (and key prefix), from its config's `storage` or the mapping file."""

    bucket: str | None
    prefix: str = ""

    @classmethod
    def parse(cls, value: Any, where: str) -> Destination | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object with processed_bucket and/or processed_prefix")
        bucket, prefix = value.get("processed_bucket"), value.get("processed_prefix") or ""
        if bucket is not None and not isinstance(bucket, str):
            raise ValueError(f"{where}: processed_bucket must be a string")
        if not isinstance(prefix, str) or ".." in prefix or prefix.startswith("/"):
            raise ValueError(f"{where}: processed_prefix must be a relative key prefix")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(bucket or None, prefix)


def load_destinations(path: Path) -> dict[str, Destination]:
    """CLIENT_STORAGE_FILE: {"client_id": {"processed_bucket": "...", "processed_prefix": "..."}, ...}."""
    raw = read_json_object(path, "CLIENT_STORAGE_FILE", "client ids to objects")
    found = {}
    for client_id, value in raw.items():
        destination = Destination.parse(value, f"CLIENT_STORAGE_FILE {path}: {client_id}")
        if destination is not None:
            found[client_id] = destination
    return found


@dataclass(frozen=True, slots=True)
class ClientSettings:
    privacy_level: str
    salt: str | None
    store: ObjectStore
    prefix: str


class ClientSettingsSource:
    """Client settings cached for `ttl_s` seconds; `store_for(bucket)` opens a client's own bucket when named."""

    def __init__(
        self,
        directory: ClientDirectory,
        default_store: ObjectStore,
        store_for: Callable[[str], Awaitable[ObjectStore]],
        *,
        destinations: dict[str, Destination] | None = None,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
    ) -> None:
        self._directory = directory
        self.default_store = default_store
        self._store_for = store_for
        self._destinations = destinations or {}
        self._cache: TTLCache[str, ClientSettings] = TTLCache(max_entries, ttl_s, timer=time.monotonic)

    async def get(self, client_id: str) -> ClientSettings:
        """Raises DirectoryUnavailable (the raw object waits for the next run) when pixel-management cannot say."""
        cached = self._cache.get(client_id)
        if cached is not None:
            return cached
        config = await self._directory.lookup_client(client_id)
        if config is None:
            logger.warning("Client %s is unknown to pixel-management: processing with the %s policy",
                           client_id, UNKNOWN_CLIENT_LEVEL)  # fmt: skip
            level, salt, own = UNKNOWN_CLIENT_LEVEL, None, None
        else:
            level = config.get("privacy_level", "standard")
            if level not in LEVELS:
                logger.warning("Client %s: unknown privacy_level %r, using %s", client_id, level, UNKNOWN_CLIENT_LEVEL)
                level = UNKNOWN_CLIENT_LEVEL
            ip = config.get("ip_collection")
            salt = ip.get("salt") if isinstance(ip, dict) and isinstance(ip.get("salt"), str) else None
            try:
                own = Destination.parse(config.get("storage"), f"client {client_id} storage")
            except ValueError as exc:
                logger.warning("%s; using the default processed bucket", exc)
                own = None
        destination = self._destinations.get(client_id) or own
        store = self.default_store
        prefix = ""
        if destination is not None:
            prefix = destination.prefix
            if destination.bucket:
                store = await self._store_for(destination.bucket)
        settings = ClientSettings(level, salt, store, prefix)
        self._cache[client_id] = settings
        return settings
