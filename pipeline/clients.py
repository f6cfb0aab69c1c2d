"""Per-client settings for processing: privacy level and salt from pixel-management, and where objects go.

Everything here that becomes part of an object key or names a bucket comes from outside (pixel-management answers,
CLIENT_STORAGE_FILE) and is checked where it enters: a client id is a path segment, a bucket an S3 bucket name, a
prefix a relative key prefix that cannot reach another client's area. A bad value fails that one client: its
settings raise ClientConfigError (logged once per lookup, counted in `refused`), and pipeline.process keeps that
client's objects waiting with a growing delay while every other client is processed.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cachetools import TTLCache

from collector.jsonfile import read_json_object
from collector.logsafe import for_log
from pipeline.objects import ObjectStore

logger = logging.getLogger(__name__)

# pixel-management's privacy levels (its contract); an unknown one gets the strictest.
LEVELS = ("standard", "gdpr", "hipaa")
# The strictest policy for a client pixel-management does not know (removed since its events were stored).
UNKNOWN_CLIENT_LEVEL = "hipaa"
# The top-level folders of our own key layout: a client prefix naming one could reach into another area.
RESERVED_SEGMENTS = frozenset({"processed-events", "raw-events"})
MAX_PREFIX_BYTES = 256
MAX_SALT_CHARS = 1024

# A client id becomes a path segment: letters, digits, _ . - only, no leading dot (same rule as at ingest).
# fullmatch, never `$`: `$` also matches before a trailing newline.
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# S3 bucket naming rules: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit, no "..", not an IPv4.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def valid_client_id(client_id: object) -> bool:
    return isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id) is not None


class ClientConfigError(ValueError):
    """A client's storage configuration cannot be used; its objects wait until it is fixed."""


class ClientDirectory(Protocol):
    """collector.ingest.auth's directories: a client's config; None if unknown, DirectoryUnavailable if it can't say."""

    async def lookup_client(self, client_id: str) -> dict[str, Any] | None: ...


def check_bucket(bucket: str, where: str) -> str:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise ClientConfigError(f"{where}: processed_bucket {for_log(bucket)} is not an S3 bucket name")
    return bucket


def check_prefix(prefix: str, where: str) -> str:
    """`prefix` ending in "/" ("" stays ""): segments of letters, digits, _ . - (no leading dot), none reserved.

    The processed key is <prefix>processed-events/<client>/...: as no prefix holds a `processed-events` segment,
    one client's area can never lie inside another's, whatever the two prefixes.
    """
    if not prefix:
        return ""
    bad = f"{where}: processed_prefix {for_log(prefix)}"
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        raise ClientConfigError(f"{bad} is longer than {MAX_PREFIX_BYTES} bytes")
    segments = prefix.removesuffix("/").split("/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise ClientConfigError(f"{bad} must be segments of letters, digits, _ . - joined by single slashes")
        if segment in RESERVED_SEGMENTS:
            raise ClientConfigError(f"{bad} names a reserved folder ({segment}/)")
    return "/".join(segments) + "/"


@dataclass(frozen=True, slots=True)
class Destination:
    """A client's own processed bucket (and key prefix), from its config's `storage` or the mapping file."""

    bucket: str | None
    prefix: str = ""

    @classmethod
    def parse(cls, value: Any, where: str) -> Destination | None:
        """None for no storage; ClientConfigError (naming `where`) for a value that cannot be used."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ClientConfigError(f"{where}: expected an object with processed_bucket and/or processed_prefix")
        bucket, prefix = value.get("processed_bucket"), value.get("processed_prefix")
        if bucket is not None and not isinstance(bucket, str):
            raise ClientConfigError(f"{where}: processed_bucket must be a string")
        if prefix is not None and not isinstance(prefix, str):
            raise ClientConfigError(f"{where}: processed_prefix must be a string")
        return cls(check_bucket(bucket, where) if bucket else None, check_prefix(prefix or "", where))


def load_destinations(path: Path) -> dict[str, Destination | ClientConfigError]:
    """CLIENT_STORAGE_FILE: {"client_id": {"processed_bucket": "...", "processed_prefix": "..."}, ...}.

    A file that is not a JSON object stops the start (ValueError naming the variable); one bad entry is refused
    with a log line and kept as its error, so that client's objects wait rather than go to the shared bucket.
    """
    raw = read_json_object(path, "CLIENT_STORAGE_FILE", "client ids to objects")
    found: dict[str, Destination | ClientConfigError] = {}
    for client_id, value in raw.items():
        where = f"CLIENT_STORAGE_FILE {path}: client {for_log(client_id)}"
        try:
            if not valid_client_id(client_id):
                raise ClientConfigError(f"{where}: not a client id (letters, digits, _ . -, up to 128)")
            destination = Destination.parse(value, where)
        except ClientConfigError as exc:
            logger.error("Refused: %s", exc)
            found[client_id] = exc
            continue
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
    """Client settings cached for `ttl_s` seconds; `store_for(bucket)` opens a client's own bucket when named.

    `refused` counts configurations refused, by source (pixel_management, storage_file): a refusal from
    pixel-management is cached like an answer, so it is logged and counted once per `ttl_s`, not once per object.
    """

    def __init__(
        self,
        directory: ClientDirectory,
        default_store: ObjectStore,
        store_for: Callable[[str], Awaitable[ObjectStore]],
        *,
        destinations: dict[str, Destination | ClientConfigError] | None = None,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
    ) -> None:
        self._directory = directory
        self.default_store = default_store
        self._store_for = store_for
        self._destinations = destinations or {}
        self._cache: TTLCache[str, ClientSettings | ClientConfigError] = TTLCache(
            max_entries, ttl_s, timer=time.monotonic
        )
        self.refused: Counter[str] = Counter(
            storage_file=sum(isinstance(d, ClientConfigError) for d in self._destinations.values())
        )

    async def get(self, client_id: str) -> ClientSettings:
        """Raises DirectoryUnavailable (the raw object waits for the next run) when pixel-management cannot say,
        ClientConfigError when this client's configuration cannot be used (only its objects wait)."""
        cached = self._cache.get(client_id)
        if cached is None:
            try:
                cached = await self._settings(client_id)
            except ClientConfigError as exc:
                cached = exc
            self._cache[client_id] = cached
        if isinstance(cached, ClientConfigError):
            raise cached
        return cached

    async def _settings(self, client_id: str) -> ClientSettings:
        mapped = self._destinations.get(client_id)
        if isinstance(mapped, ClientConfigError):
            raise mapped  # refused (and logged) when the file was read
        config = await self._directory.lookup_client(client_id)
        own: Destination | None = None
        if config is None:
            logger.warning("Client %s is unknown to pixel-management: processing with the %s policy",
                           client_id, UNKNOWN_CLIENT_LEVEL)  # fmt: skip
            level, salt = UNKNOWN_CLIENT_LEVEL, None
        else:
            level = config.get("privacy_level", "standard")
            if not isinstance(level, str) or level not in LEVELS:
                logger.warning("Client %s: unknown privacy_level %s, using %s",
                               client_id, for_log(level), UNKNOWN_CLIENT_LEVEL)  # fmt: skip
                level = UNKNOWN_CLIENT_LEVEL
            ip = config.get("ip_collection")
            salt = ip.get("salt") if isinstance(ip, dict) and isinstance(ip.get("salt"), str) else None
            try:
                if salt is not None and len(salt) > MAX_SALT_CHARS:
                    raise ClientConfigError(f"client {client_id}: ip_collection.salt is longer than {MAX_SALT_CHARS}")
                if mapped is None:
                    own = Destination.parse(config.get("storage"), f"client {client_id} storage")
            except ClientConfigError as exc:
                # Never the shared bucket instead: the client asked for its data to go elsewhere.
                self.refused["pixel_management"] += 1
                logger.error("Refused pixel-management config: %s; the client's objects wait until it is fixed", exc)
                raise
        destination = mapped or own
        store = self.default_store
        prefix = ""
        if destination is not None:
            prefix = destination.prefix
            if destination.bucket:
                store = await self._store_for(destination.bucket)
        return ClientSettings(level, salt, store, prefix)
