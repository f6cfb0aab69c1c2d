"""Stage 2: each exported raw object into one processed object per client, with that client's privacy rules."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from collector.auth import DirectoryUnavailable
from pipeline.clients import ClientSettings, ClientSettingsSource
from pipeline.formats import CONTENT_TYPES, UnreadableObject, decode_events, encode, format_of
from pipeline.objects import ObjectStore, ObjectStoreError
from pipeline.privacy import POLICY_VERSION, Policy, address_hasher

logger = logging.getLogger(__name__)

PROCESSED_PREFIX = "processed-events/"
# A client id becomes a path segment: letters, digits, _ . - only, no leading dot (same rule as at ingest).
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RAW_KEY = re.compile(r"^raw-events/(\d{4}/\d{2}/\d{2})/([^/]+?)\.(json|ndjson\.gz)$")


class ProcessingError(Exception):
    """A raw object could not be processed this run (left unprocessed; the next run tries again)."""


@dataclass(slots=True)
class ProcessResult:
    raw_objects: int = 0
    client_objects: int = 0
    rows: int = 0
    duplicates: int = 0  # events left out because an earlier raw object (or this one) already had their event_id
    dropped: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        """Objects written: one per client and raw object."""
        return self.client_objects


def processed_key(raw: str, client_id: str, prefix: str = "") -> str:
    """processed-events/<client>/YYYY/MM/DD/processed_<raw stem>.<ext>, dated like the raw object."""
    match = _RAW_KEY.match(raw)
    if match is None:
        raise ProcessingError(f"{raw}: not a raw export key")
    if not CLIENT_ID.match(client_id):
        raise ProcessingError(f"client id {client_id!r} cannot be a path segment")
    day, stem, ext = match.groups()
    return f"{prefix}{PROCESSED_PREFIX}{client_id}/{day}/processed_{stem}.{ext}"


class Processor:
    """Processes with a connection the caller holds the processing lock on (pipeline.scheduler).

    A raw object is marked processed only after every client object is written; a re-run writes the same keys
    again. Event ids are claimed per raw object in processed_event_ids, so an event resent into a later raw
    object (a client retry, a replay) is left out there, and re-running an object keeps exactly its own events.
    """

    def __init__(
        self,
        raw: ObjectStore,
        clients: ClientSettingsSource,
        *,
        ip_hash_secret: str,
        max_objects_per_run: int = 100,
    ) -> None:
        self.raw = raw
        self.clients = clients
        self.ip_hash_secret = ip_hash_secret
        self.max_objects_per_run = max_objects_per_run

    @property
    def default_store_name(self) -> str:
        return self.clients.default_store.name

    async def run(self, conn: asyncpg.Connection) -> ProcessResult:
        """Process exported raw objects not processed yet, oldest first; one failing object does not stop the rest."""
        result = ProcessResult()
        pending = await conn.fetch(
            "SELECT key FROM raw_objects WHERE exported_at IS NOT NULL AND processed_at IS NULL"
            " ORDER BY range_start LIMIT $1",
            self.max_objects_per_run,
        )
        for record in pending:
            key = record["key"]
            try:
                await self._process(conn, key, result)
            except (ProcessingError, ObjectStoreError, UnreadableObject, DirectoryUnavailable) as exc:
                result.failed.append(key)
                logger.warning("Processing %s failed, will retry: %s", key, exc)
        return result

    async def _process(self, conn: asyncpg.Connection, raw_key: str, result: ProcessResult) -> None:
        fmt = format_of(raw_key)
        body = await self.raw.get(raw_key)
        unique: dict[str, dict[str, Any]] = {}
        events = await asyncio.to_thread(decode_events, fmt, body)
        for event in events:
            unique.setdefault(str(event.get("event_id")), event)
        ids = list(unique)
        await conn.execute(
            "INSERT INTO processed_event_ids (event_id, raw_key) SELECT unnest($1::uuid[]), $2"
            " ON CONFLICT (event_id) DO NOTHING",
            ids, raw_key,
        )  # fmt: skip
        owned = {
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id::text AS event_id FROM processed_event_ids"
                " WHERE raw_key = $1 AND event_id = ANY($2::uuid[])",
                raw_key, ids,
            )
        }  # fmt: skip
        result.duplicates += len(events) - len(owned)
        by_client: dict[str, list[dict[str, Any]]] = {}
        for event_id, event in unique.items():
            if event_id in owned:
                by_client.setdefault(str(event.get("client_id")), []).append(event)
        written = []
        for client_id, client_events in sorted(by_client.items()):
            if not CLIENT_ID.match(client_id):
                # Ingest validates client ids, so this is a row written by something else: never a path segment.
                result.dropped["invalid_client_id"] = result.dropped.get("invalid_client_id", 0) + len(client_events)
                logger.error("%s: %d events of client id %r left out", raw_key, len(client_events), client_id[:80])
                continue
            settings = await self.clients.get(client_id)
            written.append(await self._write_client(raw_key, fmt, client_id, client_events, settings))
        async with conn.transaction():
            for store, key, client_id, rows, checksum in written:
                await conn.execute(
                    "INSERT INTO processed_objects"
                    " (key, store, raw_key, client_id, row_count, checksum, policy_version)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (store, key) DO UPDATE SET"
                    " row_count = EXCLUDED.row_count, checksum = EXCLUDED.checksum,"
                    " policy_version = EXCLUDED.policy_version, written_at = now()",
                    key, store, raw_key, client_id, rows, checksum, POLICY_VERSION,
                )  # fmt: skip
            await conn.execute(
                "UPDATE raw_objects SET processed_at = now(), policy_version = $2 WHERE key = $1",
                raw_key, POLICY_VERSION,
            )  # fmt: skip
        result.raw_objects += 1
        result.client_objects += len(written)
        result.rows += sum(item[3] for item in written)
        result.keys.extend(item[1] for item in written)

    async def _write_client(
        self, raw_key: str, fmt: str, client_id: str, events: list[dict[str, Any]], settings: ClientSettings
    ) -> tuple[str, str, str, int, str]:
        policy = Policy.for_level(settings.privacy_level)
        hasher = address_hasher(self.ip_hash_secret, settings.salt)
        key = processed_key(raw_key, client_id, settings.prefix)
        metadata = {
            "process_id": key.rsplit("/", 1)[-1].split(".", 1)[0],
            "processed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "source_object": raw_key,
            "client_id": client_id,
            "event_count": len(events),
            "format": fmt,
            "pipeline_stage": "processed",
            "privacy_level": policy.level,
            "policy_version": POLICY_VERSION,
        }
        # Redaction is pure Python at several µs per event: off the event loop that answers /collect.
        body = await asyncio.to_thread(_render, fmt, metadata, policy, hasher, events)
        await settings.store.put(key, body, CONTENT_TYPES[fmt])
        logger.info("Successfully uploaded %d events for client %s to processed S3: %s", len(events), client_id, key)
        return settings.store.name, key, client_id, len(events), hashlib.sha256(body).hexdigest()


def _render(
    fmt: str, metadata: dict[str, Any], policy: Policy, hasher: Callable[[str], str], events: list[dict[str, Any]]
) -> bytes:
    return encode(fmt, "process_metadata", metadata, [policy.apply(event, hasher) for event in events])
