"""Stage 2: each exported raw object into processed objects per client, with that client's privacy rules.

Layouts: json (the default) keeps the seed's processed-events/<client>/YYYY/MM/DD/, one object per client and raw
object; ndjson.gz and parquet are partitioned Hive-style, processed-events/client_id=<client>/date=<YYYY-MM-DD>/,
one object per client, raw object and receive day, so engines prune by client and day (docs/pipeline.md).

One client never holds up another: an object of a raw object that cannot be written for one client (its
configuration refused, its bucket unreachable, its events failing to render) goes to processing_retries with a
growing delay, and the raw object is marked processed for everyone else. Duplicates are removed per
(client, event id), so no client's event ids can remove another client's events.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from collector.ingest.auth import DirectoryUnavailable
from collector.logsafe import for_log
from pipeline import offload
from pipeline.clients import ClientConfigError, ClientSettings, ClientSettingsSource
from pipeline.formats import CONTENT_TYPES, FORMATS, UnreadableObject, format_of
from pipeline.iceberg import IcebergTable
from pipeline.layout import PROCESSED_PREFIX as PROCESSED_PREFIX
from pipeline.layout import SEED_LAYOUT_FORMATS, NotAKey, processed_key, raw_day
from pipeline.objects import ObjectStore, ObjectStoreError
from pipeline.offload import OffloadFailed
from pipeline.privacy import POLICY_VERSION, Policy, address_hasher
from pipeline.render import MAX_ERROR_CHARS, ClientRender, render_all, scan

logger = logging.getLogger(__name__)

RETRY_BASE_S = 60.0
RETRY_MAX_S = 3600.0
MAX_RETRIES_PER_RUN = 100


class ProcessingError(Exception):
    """A raw object could not be processed this run (left unprocessed; the next run tries again)."""


# Failures of a raw object as a whole that lie in the object itself (its content, or the worker process dying on it):
# those back off and are quarantined after PROCESS_MAX_ATTEMPTS. An unreachable directory or store is nobody's
# object's fault: the object is simply tried again on the next run, so that it proceeds as soon as they are back.
POISON = (UnreadableObject, ProcessingError, asyncpg.DataError, OffloadFailed)


@dataclass(slots=True)
class ProcessResult:
    raw_objects: int = 0
    client_objects: int = 0
    rows: int = 0
    duplicates: int = 0  # events left out because an earlier raw object (or this one) already had their event_id
    dropped: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # raw objects left unprocessed (unreadable, directory down)
    deferred: dict[str, int] = field(default_factory=dict)  # client id → its objects that failed and wait
    failures: Counter[str] = field(default_factory=Counter)  # failed client objects by reason: config, store, error

    @property
    def objects(self) -> int:
        """Objects written: one per client and raw object (and receive day, in the partitioned layout)."""
        return self.client_objects


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ClientConfigError):
        return "config"
    if isinstance(exc, ObjectStoreError):
        return "store"
    return "error"


@dataclass(slots=True)
class _Written:
    store: str
    key: str
    client_id: str
    rows: int
    checksum: str


class Processor:
    """Processes with a connection the caller holds the processing lock on (pipeline.scheduler).

    A raw object is marked processed once every client's object is written or waits in processing_retries; a
    re-run writes the same keys again. Event ids are claimed per (client, event id) by the raw object they are
    first seen in (processed_event_ids), so an event resent into a later raw object (a client retry, a replay) is
    left out there, and re-running an object, or retrying one client of it, keeps exactly its own events.
    """

    def __init__(
        self,
        raw: ObjectStore,
        clients: ClientSettingsSource,
        *,
        ip_hash_secret: str,
        fmt: str = "json",
        max_objects_per_run: int = 100,
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        max_attempts: int = 10,
        table: IcebergTable | None = None,  # ICEBERG_CATALOG_URI: the processed rows into an Iceberg table too
    ) -> None:
        self.raw = raw
        self.clients = clients
        self.ip_hash_secret = ip_hash_secret
        if fmt not in FORMATS:
            raise ValueError(f"unknown processed format {fmt!r}")
        self.fmt = fmt
        self.max_objects_per_run = max_objects_per_run
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_attempts = max_attempts  # failed attempts before an object is quarantined (PROCESS_MAX_ATTEMPTS)
        self.table = table

    @property
    def default_store_name(self) -> str:
        return self.clients.default_store.name

    async def run(self, conn: asyncpg.Connection) -> ProcessResult:
        """Retry the client objects that are due, then process exported raw objects not processed yet, oldest
        first; one failing raw object or client does not stop the rest."""
        result = ProcessResult()
        # Clients still backing off: their new objects join the wait without an attempt, so an unreachable bucket
        # costs one attempt per backoff period, not one (with its timeouts) per raw object and run.
        # A quarantined client's new objects join its quarantine, not attempted.
        waiting = {
            r["client_id"]
            for r in await conn.fetch(
                "SELECT client_id FROM processing_retries GROUP BY client_id"
                " HAVING min(next_attempt_at) > now() OR bool_or(quarantined_at IS NOT NULL)"
            )
        }
        due: dict[str, set[str]] = {}
        for record in await conn.fetch(
            "SELECT raw_key, client_id FROM processing_retries"
            " WHERE next_attempt_at <= now() AND quarantined_at IS NULL"
            " ORDER BY next_attempt_at, attempts DESC, raw_key LIMIT $1",  # the longest failing first
            MAX_RETRIES_PER_RUN,
        ):
            due.setdefault(record["raw_key"], set()).add(record["client_id"])
        for key, clients in due.items():
            await self._guarded(conn, key, result, waiting, clients)
        pending = await conn.fetch(
            "SELECT key FROM raw_objects WHERE exported_at IS NOT NULL AND processed_at IS NULL"
            " AND quarantined_at IS NULL AND (process_next_at IS NULL OR process_next_at <= now())"
            " ORDER BY range_start LIMIT $1",
            self.max_objects_per_run,
        )
        for record in pending:
            await self._guarded(conn, record["key"], result, waiting, None)
        return result

    async def _guarded(
        self, conn: asyncpg.Connection, key: str, result: ProcessResult, waiting: set[str], only: set[str] | None
    ) -> None:
        try:
            await self._process(conn, key, result, waiting, only)
        except (
            ProcessingError,
            NotAKey,
            ObjectStoreError,
            UnreadableObject,
            DirectoryUnavailable,
            asyncpg.DataError,
            OffloadFailed,
        ) as exc:
            result.failed.append(key)
            logger.warning("Processing %s failed, will retry: %s", key, for_log(str(exc), MAX_ERROR_CHARS))
            if only:  # the raw object itself failed: its waiting clients wait longer, not in a tight loop
                async with conn.transaction():
                    for client_id in sorted(only):
                        await self._defer(conn, key, client_id, exc, result)
            elif isinstance(exc, POISON):  # the object's own fault: back off, and quarantine it in the end
                await self._defer_object(conn, key, exc)

    async def _defer_object(self, conn: asyncpg.Connection, key: str, exc: BaseException) -> None:
        """The whole raw object failed: try it again after a growing delay, or quarantine it after max_attempts."""
        error = for_log(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
        record = await conn.fetchrow(
            "UPDATE raw_objects SET process_attempts = process_attempts + 1, process_error = $2,"
            " process_next_at = now() + make_interval(secs => least($4, $3 * power(2, process_attempts))),"
            " quarantined_at = CASE WHEN process_attempts + 1 >= $5 THEN now() END"
            " WHERE key = $1 RETURNING process_attempts, quarantined_at",
            key, error, self.retry_base_s, self.retry_max_s, self.max_attempts,
        )  # fmt: skip
        if record is not None and record["quarantined_at"] is not None:
            logger.error(
                "Processing %s quarantined after %d failed attempts: %s", key, record["process_attempts"], error
            )

    async def _process(
        self, conn: asyncpg.Connection, raw_key: str, result: ProcessResult, waiting: set[str], only: set[str] | None
    ) -> None:
        """Write one raw object's client objects (only those of `only` when retrying); mark it when `only` is None.

        A client in `waiting` is not attempted: its object waits with the client's others. A client that fails
        joins `waiting` for the rest of the run.
        """
        if only is not None and only <= waiting:  # nothing to attempt: no need to read the raw object
            async with conn.transaction():
                for client_id in sorted(only):
                    await self._postpone(conn, raw_key, client_id, result)
            return
        raw_fmt = format_of(raw_key)
        body = await self.raw.get(raw_key)
        # Decoding, redacting and encoding are CPU work on the whole object: in the worker process (offload), so
        # that the process answering /collect only moves bytes.
        clients, ids, per_client, total, invalid = await offload.run(scan, raw_fmt, body, only)
        if invalid:
            # Ingest validates client ids, so these rows were written by something else: never a path segment.
            result.dropped["invalid_client_id"] = result.dropped.get("invalid_client_id", 0) + invalid
            logger.error("%s: %d events of invalid client ids left out", raw_key, invalid)
        skip = await self._claim(conn, raw_key, clients, ids)
        owned = Counter(per_client)
        owned.subtract(client_id for client_id, _ in skip)
        if only is None:  # a retry meets the same duplicates again: counted once, on the first pass
            result.duplicates += total - sum(owned.values())
        failed: list[tuple[str, BaseException]] = []
        postponed = sorted(c for c, n in owned.items() if n > 0 and c in waiting)
        jobs = await self._jobs(raw_key, sorted(c for c, n in owned.items() if n > 0 and c not in waiting), failed)
        waiting.update(client_id for client_id, _ in failed)
        renders = {client_id: self._render_job(raw_key, client_id, settings) for client_id, settings in jobs.items()}
        default_day = None if self.fmt in SEED_LAYOUT_FORMATS else raw_day(raw_key)
        rendered = (
            await offload.run(render_all, raw_fmt, body, self.fmt, default_day, only, skip, renders) if renders else {}
        )
        del body
        written: list[_Written] = []
        for client_id, settings in jobs.items():
            try:
                written.extend(await self._upload(raw_key, client_id, settings, rendered[client_id]))
            except Exception as exc:  # a render that failed on this client's events, or its bucket
                failed.append((client_id, exc))
                waiting.add(client_id)
        if self.table is not None and written:  # one commit, before the manifest records them; else all retried
            written = await self.table.add(raw_key, self.fmt, written, rendered, failed)
            waiting.update(client_id for client_id, _ in failed)
        await self._record(conn, raw_key, only, written, failed, postponed, result)

    async def _record(
        self,
        conn: asyncpg.Connection,
        raw_key: str,
        only: set[str] | None,
        written: list[_Written],
        failed: list[tuple[str, BaseException]],
        postponed: list[str],
        result: ProcessResult,
    ) -> None:
        """In one transaction: the objects written go to the manifest, the clients that failed or wait go to
        processing_retries, and (unless retrying) the raw object is marked processed."""
        async with conn.transaction():
            for item in written:
                await conn.execute(
                    "INSERT INTO processed_objects"
                    " (key, store, raw_key, client_id, row_count, checksum, policy_version)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (store, key) DO UPDATE SET"
                    " row_count = EXCLUDED.row_count, checksum = EXCLUDED.checksum,"
                    " policy_version = EXCLUDED.policy_version, written_at = now()",
                    item.key, item.store, raw_key, item.client_id, item.rows, item.checksum, POLICY_VERSION,
                )  # fmt: skip
            # Written, or (on a retry) nothing left to write: that client no longer waits for this raw object.
            done = {item.client_id for item in written} | (only or set())
            await conn.execute(
                "DELETE FROM processing_retries WHERE raw_key = $1 AND client_id = ANY($2::text[])",
                raw_key, sorted(done - {client_id for client_id, _ in failed} - set(postponed)),
            )  # fmt: skip
            for client_id in postponed:
                await self._postpone(conn, raw_key, client_id, result)
            for client_id, error in failed:
                await self._defer(conn, raw_key, client_id, error, result)
            if only is None:
                await conn.execute(
                    "UPDATE raw_objects SET processed_at = now(), policy_version = $2 WHERE key = $1",
                    raw_key, POLICY_VERSION,
                )  # fmt: skip
        if only is None:
            result.raw_objects += 1
        result.client_objects += len(written)
        result.rows += sum(item.rows for item in written)
        result.keys.extend(item.key for item in written)

    async def _jobs(
        self, raw_key: str, client_ids: list[str], failed: list[tuple[str, BaseException]]
    ) -> dict[str, ClientSettings]:
        """Each client's settings; a client whose configuration (or key) fails joins `failed`."""
        jobs: dict[str, ClientSettings] = {}
        for client_id in client_ids:
            try:
                settings = await self.clients.get(client_id)
                processed_key(raw_key, client_id, settings.prefix, fmt=self.fmt)  # refused here, not after rendering
                jobs[client_id] = settings
            except DirectoryUnavailable:
                raise  # says nothing about this client: the whole raw object waits for the next run
            except Exception as exc:  # this client's failure, whatever it is, is only this client's
                failed.append((client_id, exc))
        return jobs

    async def _claim(
        self, conn: asyncpg.Connection, raw_key: str, clients: list[str], ids: list[str]
    ) -> set[tuple[str, str]]:
        """Claim each (client, event id) of the object for it; those an earlier raw object claimed first."""
        await conn.execute(
            "INSERT INTO processed_event_ids (client_id, event_id, raw_key)"
            " SELECT c, e::uuid, $3 FROM unnest($1::text[], $2::text[]) AS u(c, e) ON CONFLICT DO NOTHING",
            clients, ids, raw_key,
        )  # fmt: skip
        return {
            (r["client_id"], r["event_id"])
            for r in await conn.fetch(
                "SELECT p.client_id, p.event_id::text AS event_id FROM processed_event_ids p"
                " JOIN unnest($1::text[], $2::text[]) AS u(c, e) ON p.client_id = u.c AND p.event_id = u.e::uuid"
                " WHERE p.raw_key <> $3",
                clients, ids, raw_key,
            )
        }  # fmt: skip

    async def _defer(
        self, conn: asyncpg.Connection, raw_key: str, client_id: str, exc: BaseException, result: ProcessResult
    ) -> None:
        reason, error = failure_reason(exc), for_log(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
        record = await conn.fetchrow(
            "INSERT INTO processing_retries AS r (raw_key, client_id, reason, last_error, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT (raw_key, client_id) DO UPDATE"
            " SET attempts = r.attempts + 1, reason = EXCLUDED.reason, last_error = EXCLUDED.last_error,"
            " next_attempt_at = now() + make_interval(secs => least($6, $5 * power(2, r.attempts))),"
            " quarantined_at = CASE WHEN r.attempts + 1 >= $7 THEN now() END"
            " RETURNING attempts, extract(epoch FROM next_attempt_at - now())::float8 AS delay, quarantined_at",
            raw_key, client_id, reason, error, self.retry_base_s, self.retry_max_s, self.max_attempts,
        )  # fmt: skip
        assert record is not None
        result.deferred[client_id] = result.deferred.get(client_id, 0) + 1
        result.failures[reason] += 1
        if record["quarantined_at"] is not None:
            logger.error("Client %s: object of %s quarantined after %d failed attempts: %s",
                         client_id, raw_key, record["attempts"], error)  # fmt: skip
            return
        logger.warning("Client %s: object of %s not written (attempt %d, next in %.0f s): %s",
                       client_id, raw_key, record["attempts"], record["delay"], error)  # fmt: skip

    async def _postpone(self, conn: asyncpg.Connection, raw_key: str, client_id: str, result: ProcessResult) -> None:
        """Queue a waiting client's object, not attempted, to be retried with the client's others."""
        await conn.execute(
            "INSERT INTO processing_retries AS r"
            " (raw_key, client_id, attempts, reason, last_error, next_attempt_at, quarantined_at)"
            " VALUES ($1, $2, 0, 'waiting', 'not attempted: earlier objects of this client failed',"
            # The client's latest retry time; now (the next run) if it has none (its failure was not recorded).
            " coalesce((SELECT max(next_attempt_at) FROM processing_retries WHERE client_id = $2), now()),"
            # Quarantined with the client's others, if it has any there.
            " (SELECT max(quarantined_at) FROM processing_retries WHERE client_id = $2))"
            " ON CONFLICT (raw_key, client_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at",
            raw_key, client_id,
        )  # fmt: skip
        result.deferred[client_id] = result.deferred.get(client_id, 0) + 1

    def _render_job(
        self, raw_key: str, client_id: str, settings: ClientSettings
    ) -> tuple[dict[str, Any], Policy, Callable[[str], str]]:
        """What the worker process needs to render one client's objects: their metadata, policy and IP hasher."""
        policy = Policy.for_level(settings.privacy_level)
        key = processed_key(raw_key, client_id, settings.prefix, fmt=self.fmt)
        metadata = {
            "process_id": key.rsplit("/", 1)[-1].split(".", 1)[0],
            "processed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "source_object": raw_key,
            "client_id": client_id,
            "event_count": 0,  # set by the worker, which counts them
            "format": self.fmt,
            "pipeline_stage": "processed",
            "privacy_level": policy.level,
            "policy_version": POLICY_VERSION,
        }
        return metadata, policy, address_hasher(self.ip_hash_secret, settings.salt)

    async def _upload(
        self, raw_key: str, client_id: str, settings: ClientSettings, rendered: ClientRender
    ) -> list[_Written]:
        """Put the client's objects (one per day in a day-partitioned layout); any failure fails the client, whose
        retry writes them all again under the same keys."""
        if isinstance(rendered, str):
            raise ProcessingError(f"client {client_id}: its events could not be rendered: {rendered}")
        written: list[_Written] = []
        for day, (body, rows, checksum) in rendered.items():
            key = processed_key(raw_key, client_id, settings.prefix, fmt=self.fmt, day=day or None)
            await settings.store.put(key, body, CONTENT_TYPES[self.fmt])
            logger.info(
                "Successfully uploaded %d events for client %s to processed %s: %s",
                rows, client_id, settings.store.destination, key,
            )  # fmt: skip
            written.append(_Written(settings.store.name, key, client_id, rows, checksum))
        return written
