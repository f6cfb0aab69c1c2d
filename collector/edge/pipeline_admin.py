"""HTTP handlers of the pipeline's admin endpoints: run a stage now, and report both stages and retention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.requests import Request
from starlette.routing import Route

from collector.edge.routes import JSONResponse, now_iso, require_admin, services_of
from collector.errors import CollectorError, DatabaseUnavailable, Unavailable
from pipeline.export import ExportStalled
from pipeline.objects import ObjectStoreError
from pipeline.retention import RetentionResult, daily_partitions
from pipeline.scheduler import Pipeline, StageBusy, StageStats
from pipeline.status import export_status, export_watermark, process_status

if TYPE_CHECKING:
    from collector.services import Services


class StageRunning(CollectorError):
    status, error = 409, "stage_running"


class ObjectStoreUnavailable(Unavailable):
    error = "object_store_unavailable"
    retry_after_s = 30


class ExportBlocked(CollectorError):
    status, error = 500, "export_blocked"


# A run's own connection failing to open (or dropping): the database, not the request, is the problem.
DATABASE_DOWN = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError, asyncpg.InterfaceError,
)  # fmt: skip


def pipeline_of(services: Services) -> Pipeline:
    """The running pipeline: these routes are mounted only in the roles that run it (all, pipeline)."""
    assert services.pipeline is not None, "pipeline routes mounted without a pipeline"
    return services.pipeline


@contextmanager
def _database_needed() -> Iterator[None]:
    """503 with Retry-After, not a 500, when a stage cannot reach PostgreSQL."""
    try:
        yield
    except DATABASE_DOWN as exc:  # object stores wrap their OSErrors in ObjectStoreError: never caught here
        raise DatabaseUnavailable(f"the database is unreachable ({type(exc).__name__}); retry later") from None


async def export_run(request: Request) -> JSONResponse:
    """Export now (the schedule runs it every EXPORT_INTERVAL_S anyway)."""
    require_admin(request)
    pipeline = pipeline_of(services_of(request.scope))
    try:
        with _database_needed():
            result = await pipeline.run_export()
    except StageBusy as exc:
        raise StageRunning(str(exc)) from None
    except ObjectStoreError as exc:
        raise ObjectStoreUnavailable(
            f"upload failed; nothing was marked exported, the next run retries: {exc}"
        ) from None
    except ExportStalled as exc:
        raise ExportBlocked(str(exc)) from None
    retention = pipeline.last_retention
    return JSONResponse({
        "status": "success",
        "message": f"Exported {result.rows} events in {result.objects} object(s)",
        "events_exported": result.rows,
        "objects": result.keys,
        "watermark_id": result.watermark,
        "waiting_for_transactions_older_than": result.waiting_for_xid,
        "partitions_dropped": retention.dropped if retention else [],
        "timestamp": now_iso(),
    })  # fmt: skip


async def process_run(request: Request) -> JSONResponse:
    """Process exported raw objects now."""
    require_admin(request)
    try:
        with _database_needed():
            result = await pipeline_of(services_of(request.scope)).run_process()
    except StageBusy as exc:
        raise StageRunning(str(exc)) from None
    return JSONResponse({
        "status": "success" if not (result.failed or result.deferred) else "partial",
        "message": f"Processed {result.raw_objects} raw object(s) into {result.client_objects} client object(s)",
        "raw_objects_processed": result.raw_objects,
        "events_processed": result.rows,
        "duplicates_skipped": result.duplicates,
        "dropped": result.dropped,
        "objects": result.keys,
        "failed": result.failed,
        # Clients whose objects could not be written this run: they wait in /process/status' failing_clients.
        "clients_failed": result.deferred,
        "timestamp": now_iso(),
    })  # fmt: skip


async def export_status_route(request: Request) -> JSONResponse:
    require_admin(request)
    return JSONResponse({**await export_status(services_of(request.scope).store.pool), "timestamp": now_iso()})


async def process_status_route(request: Request) -> JSONResponse:
    require_admin(request)
    return JSONResponse({**await process_status(services_of(request.scope).store.pool), "timestamp": now_iso()})


async def export_config(request: Request) -> JSONResponse:
    """Where and how the pipeline writes; never credentials."""
    require_admin(request)
    services = services_of(request.scope)
    settings, pipeline = services.settings, pipeline_of(services)
    return JSONResponse({
        "raw_store": pipeline.exporter.objects.name,
        "processed_store": pipeline.processor.default_store_name,
        "format": pipeline.exporter.fmt,
        "export_batch_size": pipeline.exporter.batch_size,
        "export_interval_s": pipeline.export_interval_s,
        "process_interval_s": pipeline.process_interval_s,
        "retention_days": pipeline.retention_days,
        "s3_endpoint_url": settings.s3_endpoint_url,
        "raw_credentials": "explicit" if settings.raw.access_key else "default chain",
        "processed_credentials": "explicit" if settings.processed.access_key else "default chain",
    })  # fmt: skip


async def pipeline_status(request: Request) -> JSONResponse:
    """Both stages, retention, and the age of the oldest event not yet exported."""
    require_admin(request)
    services = services_of(request.scope)
    pipeline = pipeline_of(services)
    pool = services.store.pool
    export = await export_status(pool)
    process = await process_status(pool)
    partitions = await daily_partitions(pool)
    retention = pipeline.last_retention
    body: dict[str, Any] = {
        "export": export,
        "process": process,
        "retention": {
            "retention_days": pipeline.retention_days,
            "oldest_partition": partitions[0][0] if partitions else None,
            "partitions": len(partitions),
            "last_dropped": retention.dropped if retention else [],
            "kept_unexported": retention.kept_unexported if retention else [],
        },
        "oldest_unexported_event_age_seconds": export["lag_seconds"],
        "worker": {
            "export": _stage(pipeline.stats.export),
            "process": _stage(pipeline.stats.process),
        },
        "timestamp": now_iso(),
    }
    return JSONResponse(body)


def _stage(stats: StageStats) -> dict[str, Any]:
    last = stats.last_success
    return {
        "runs": stats.runs, "failures": stats.failures, "skipped_busy": stats.skipped,
        "objects": stats.objects, "rows": stats.rows, "last_error": stats.last_error,
        "last_success_at": None if last is None else datetime.fromtimestamp(last, UTC).isoformat(),
    }  # fmt: skip


def _cutoff(retention_days: int) -> date:
    """Day partitions before this day are past RETENTION_DAYS (the rule pipeline.retention.drop_expired applies)."""
    return datetime.now(UTC).date() - timedelta(days=retention_days)


def _retention_result(result: RetentionResult | None) -> dict[str, Any] | None:
    return None if result is None else {"dropped": result.dropped, "kept_unexported": result.kept_unexported}


async def cleanup_status(request: Request) -> JSONResponse:
    """The seed's /cleanup/status, answered by retention: what is past RETENTION_DAYS and what the last run did."""
    require_admin(request)
    services = services_of(request.scope)
    pipeline, pool = pipeline_of(services), services.store.pool
    cutoff = _cutoff(pipeline.retention_days)
    partitions = await daily_partitions(pool)
    return JSONResponse({
        "retention_days": pipeline.retention_days,
        "cutoff": cutoff.isoformat(),
        "partitions": len(partitions),
        "oldest_partition": partitions[0][0] if partitions else None,
        # Dropped by the next run once all their rows are exported (export_watermark moves past them).
        "expired_partitions": [name for name, day in partitions if day < cutoff],
        "export_watermark": await export_watermark(pool),
        "last_run": _retention_result(pipeline.last_retention),
        "schedule": f"after every export run (every {pipeline.export_interval_s:g} s) and on POST /cleanup/run",
        "timestamp": now_iso(),
    })  # fmt: skip


async def cleanup_run(request: Request) -> JSONResponse:
    """The seed's /cleanup/run: apply retention now, under the export stage's lock (retention runs after export)."""
    require_admin(request)
    services = services_of(request.scope)
    pipeline = pipeline_of(services)
    try:
        with _database_needed():
            result = await pipeline.run_retention()
    except StageBusy as exc:
        raise StageRunning(str(exc)) from None
    return JSONResponse({
        "status": "success",
        "message": f"Dropped {len(result.dropped)} partition(s) older than {pipeline.retention_days} days",
        "dropped": result.dropped,
        # Past RETENTION_DAYS but holding rows not exported yet: dropped once the export catches up.
        "kept_unexported": result.kept_unexported,
        "retention_days": pipeline.retention_days,
        "cutoff": _cutoff(pipeline.retention_days).isoformat(),
        "timestamp": now_iso(),
    })  # fmt: skip


ROUTES = [
    Route("/export/run", export_run, methods=["POST"]),
    Route("/export/status", export_status_route),
    Route("/export/config", export_config),
    Route("/process/run", process_run, methods=["POST"]),
    Route("/process/status", process_status_route),
    Route("/pipeline/status", pipeline_status),
    Route("/cleanup/status", cleanup_status),
    Route("/cleanup/run", cleanup_run, methods=["POST"]),
]
