"""Pipeline: runs export, retention and processing on a schedule and on demand, one runner per stage anywhere."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import asyncpg

from collector.ops.periodic import Periodic
from collector.settings import Settings
from pipeline import offload
from pipeline.clients import ClientDirectory, ClientSettingsSource, load_destinations
from pipeline.export import Exporter, ExportResult
from pipeline.iceberg import IcebergTable
from pipeline.iceberg_target import IcebergTarget
from pipeline.process import Processor, ProcessResult
from pipeline.retention import RetentionResult, drop_expired
from pipeline.status import (
    Queryable,
    client_retries,
    export_watermark,
    oldest_unexported,
    oldest_unprocessed,
    quarantine_counts,
)
from pipeline.stores import Stores

logger = logging.getLogger(__name__)

# Advisory lock keys, one per stage, held on a connection of the run's own: if its process dies, PostgreSQL
# releases the lock with the connection, and the next cycle on any worker or instance takes over.
EXPORT_LOCK_KEY = 0x636F6C6C_6578_7001
PROCESS_LOCK_KEY = 0x636F6C6C_7072_6F01
CONNECT_TIMEOUT_S = 10.0
LAG_REFRESH_S = 15.0
STATEMENT_TIMEOUT_S = 120.0


class RunResult(Protocol):
    """What both stages' results say of a run (ExportResult, ProcessResult)."""

    @property
    def objects(self) -> int: ...

    @property
    def rows(self) -> int: ...


T = TypeVar("T", bound=RunResult)


class StageBusy(Exception):
    """Another worker or instance is running this stage right now."""


@dataclass(slots=True)
class StageStats:
    """This worker's runs of one stage (other workers count their own; the tables hold the shared last run)."""

    runs: int = 0
    failures: int = 0
    skipped: int = 0  # another runner held the lock
    objects: int = 0
    rows: int = 0
    last_success: float | None = None  # time.time()
    last_error: str | None = None


@dataclass(slots=True)
class PipelineStats:
    export: StageStats = field(default_factory=StageStats)
    process: StageStats = field(default_factory=StageStats)
    retention_dropped: int = 0
    # Unix times read from the tables by every worker (see Pipeline.refresh_lag), None when nothing waits.
    oldest_unexported_at: float | None = None  # receive time of the oldest event not yet exported
    oldest_unprocessed_at: float | None = None  # export time of the oldest raw object not yet processed
    # Client objects that failed by reason (config, store, error), this worker's attempts; and, read from the
    # shared table like the lag, the client objects waiting for a retry and the clients they belong to.
    client_failures: Counter[str] = field(default_factory=Counter)
    retry_objects: int = 0
    failing_clients: int = 0
    # Read from the shared tables too: raw objects, and client objects of one, quarantined (PROCESS_MAX_ATTEMPTS).
    quarantined_raw: int = 0
    quarantined_client: int = 0


class Pipeline:
    """Both stages, each run holding its stage's advisory lock on a dedicated connection."""

    def __init__(
        self,
        dsn: str,
        exporter: Exporter,
        processor: Processor,
        *,
        retention_days: int,
        export_interval_s: float,
        process_interval_s: float,
    ) -> None:
        self._dsn = dsn
        self.exporter = exporter
        self.processor = processor
        self.retention_days = retention_days
        self.export_interval_s = export_interval_s
        self.process_interval_s = process_interval_s
        self.stats = PipelineStats()
        self.last_retention: RetentionResult | None = None
        self._schedules: list[Periodic] = []

    async def run_export(self) -> ExportResult:
        """Export now, then apply retention; StageBusy if another runner holds the export lock."""

        async def work(conn: asyncpg.Connection) -> ExportResult:
            result = await self.exporter.run(conn)
            self.last_retention = await drop_expired(
                conn, retention_days=self.retention_days, today=datetime.now(UTC).date()
            )
            self.stats.retention_dropped += len(self.last_retention.dropped)
            return result

        started = time.monotonic()
        result = await self._locked("export", EXPORT_LOCK_KEY, self.stats.export, work)
        logger.info("Export run: objects=%d rows=%d watermark=%d duration_ms=%.0f",
                    result.objects, result.rows, result.watermark, (time.monotonic() - started) * 1000)  # fmt: skip
        return result

    async def run_process(self) -> ProcessResult:
        """Process now; StageBusy if another runner holds the processing lock."""

        async def work(conn: asyncpg.Connection) -> ProcessResult:
            result = await self.processor.run(conn)
            # Resends come within minutes; ids older than the retention window only cost space.
            await conn.execute(
                "DELETE FROM processed_event_ids WHERE processed_at < now() - make_interval(days => $1)",
                self.retention_days,
            )
            return result

        started = time.monotonic()
        result = await self._locked("process", PROCESS_LOCK_KEY, self.stats.process, work)
        self.stats.client_failures.update(result.failures)
        if result.failed:
            self.stats.process.last_error = f"{len(result.failed)} raw object(s) failed, first {result.failed[0]}"
        elif result.deferred:
            self.stats.process.last_error = f"objects of {len(result.deferred)} client(s) wait for a retry"
        logger.info("Processing run: raw_objects=%d client_objects=%d rows=%d duplicates=%d failed=%d"
                    " clients_failed=%d duration_ms=%.0f",
                    result.raw_objects, result.client_objects, result.rows, result.duplicates, len(result.failed),
                    len(result.deferred), (time.monotonic() - started) * 1000)  # fmt: skip
        return result

    async def run_retention(self) -> RetentionResult:
        """Apply retention now (the seed's /cleanup/run) under the export stage's lock: it follows every export."""
        conn = await self._connect()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", EXPORT_LOCK_KEY):
                raise StageBusy("another worker or instance is running the export stage (retention follows it)")
            result = await drop_expired(conn, retention_days=self.retention_days, today=datetime.now(UTC).date())
        finally:
            await _close(conn)
        self.last_retention = result
        self.stats.retention_dropped += len(result.dropped)
        return result

    async def _connect(self) -> asyncpg.Connection:
        """A connection of the run's own: closing it releases the stage's advisory lock, whatever happens."""
        return await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S)

    async def _locked(
        self, stage: str, key: int, stats: StageStats, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        conn = await self._connect()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                stats.skipped += 1
                raise StageBusy(f"another worker or instance is running the {stage} stage")
            stats.runs += 1
            try:
                result = await work(conn)
            except Exception as exc:
                stats.failures += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
                await _record(conn, stage, ok=False, error=stats.last_error, objects=None, rows=None)
                raise
            stats.last_success = time.time()
            stats.last_error = None
            stats.objects += result.objects
            stats.rows += result.rows
            await _record(conn, stage, ok=True, error=None, objects=result.objects, rows=result.rows)
            return result
        finally:
            await _close(conn)

    async def refresh_lag(self, db: Queryable) -> None:
        """Read what waits for each stage from the shared tables, so every worker reports the leader's progress."""
        unexported = await oldest_unexported(db, await export_watermark(db))
        unprocessed = await oldest_unprocessed(db)
        self.stats.oldest_unexported_at = None if unexported is None else unexported.timestamp()
        self.stats.oldest_unprocessed_at = None if unprocessed is None else unprocessed.timestamp()
        self.stats.retry_objects, self.stats.failing_clients = await client_retries(db)
        self.stats.quarantined_raw, self.stats.quarantined_client = await quarantine_counts(db)

    def start(self, db: Queryable) -> None:
        """Schedule both stages, and the lag refresh through `db` (the app's pool: it needs no lock)."""
        # StageBusy is no failure: the leader is elsewhere this round. Any other failure is logged; the stage's own
        # state makes the next round pick up where this one stopped.
        self._schedules = [
            Periodic("export", self.export_interval_s, self.run_export, quiet=(StageBusy,)),
            Periodic("process", self.process_interval_s, self.run_process, quiet=(StageBusy,)),
            Periodic("pipeline-lag", LAG_REFRESH_S, lambda: self.refresh_lag(db)),
        ]
        for schedule in self._schedules:
            schedule.start()

    async def close(self) -> None:
        """Stop both schedules; a run in progress is cancelled (its claims make the next run finish it). Then stop
        the worker process processing renders in, if one was started."""
        await asyncio.gather(*(schedule.close() for schedule in self._schedules))
        self._schedules = []
        await asyncio.to_thread(offload.shutdown)


async def _record(
    conn: asyncpg.Connection, stage: str, *, ok: bool, error: str | None, objects: int | None, rows: int | None
) -> None:
    try:
        await conn.execute(
            "INSERT INTO pipeline_runs AS r (stage, last_run_at, last_success_at, last_result, last_error,"
            " last_objects, last_rows) VALUES ($1, now(), CASE WHEN $2 THEN now() END, $3, $4, $5, $6)"
            " ON CONFLICT (stage) DO UPDATE SET last_run_at = now(),"
            " last_success_at = coalesce(EXCLUDED.last_success_at, r.last_success_at),"
            " last_result = EXCLUDED.last_result, last_error = EXCLUDED.last_error,"
            " last_objects = EXCLUDED.last_objects, last_rows = EXCLUDED.last_rows",
            stage, ok, "success" if ok else "failure", error, objects, rows,
        )  # fmt: skip
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        logger.warning("Could not record the %s run in pipeline_runs", stage, exc_info=True)


async def open_pipeline(settings: Settings, dsn: str, directory: ClientDirectory, stack: AsyncExitStack) -> Pipeline:
    """Both stages as Settings describe them, their stores closing with `stack`; not started."""
    stores = await Stores.open(settings, stack)
    destinations = load_destinations(Path(settings.client_storage_file)) if settings.client_storage_file else {}
    clients = ClientSettingsSource(
        directory, stores.processed, stores.client_bucket, destinations=destinations, ttl_s=settings.auth_cache_ttl_s
    )
    return Pipeline(
        dsn,
        Exporter(
            stores.raw,
            fmt=settings.export_format,
            batch_size=settings.export_batch_size,
            max_object_bytes=settings.export_max_object_bytes,
        ),
        # Development has no secret of its own; production refuses to start without IP_HASH_SECRET.
        Processor(
            stores.raw,
            clients,
            ip_hash_secret=settings.hash_secret,
            fmt=settings.processed_format,
            max_attempts=settings.process_max_attempts,
            table=IcebergTable(target) if (target := IcebergTarget.from_settings(settings)) else None,
        ),
        retention_days=settings.retention_days,
        export_interval_s=settings.export_interval_s,
        process_interval_s=settings.process_interval_s,
    )


async def _close(conn: asyncpg.Connection) -> None:
    """Close a run's connection (which releases its lock too); terminate it if the server does not answer."""
    try:
        await conn.close(timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
