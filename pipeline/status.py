"""What /export/status, /process/status and /pipeline/status report, read from the pipeline's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

# A pool or a connection: each status query stands alone.
Queryable = asyncpg.Pool | asyncpg.Connection


async def _row(db: Queryable, query: str, *args: Any) -> asyncpg.Record:
    record = await db.fetchrow(query, *args)
    assert record is not None  # aggregate and single-row queries always return a row
    return record


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


async def _last_run(db: Queryable, stage: str) -> dict[str, Any] | None:
    run = await db.fetchrow("SELECT * FROM pipeline_runs WHERE stage = $1", stage)
    if run is None:
        return None
    return {
        "at": _iso(run["last_run_at"]),
        "result": run["last_result"],
        "error": run["last_error"],
        "objects": run["last_objects"],
        "rows": run["last_rows"],
        "last_success_at": _iso(run["last_success_at"]),
    }


async def oldest_unexported(db: Queryable, watermark: int) -> datetime | None:
    """Receive time of the first row past the watermark: the oldest event no raw object holds yet."""
    oldest: datetime | None = await db.fetchval(
        "SELECT received_at FROM events_log WHERE id > $1 ORDER BY id LIMIT 1", watermark
    )
    return oldest


async def oldest_unprocessed(db: Queryable) -> datetime | None:
    """Export time of the oldest raw object not processed yet."""
    oldest: datetime | None = await db.fetchval(
        "SELECT min(exported_at) FROM raw_objects WHERE exported_at IS NOT NULL AND processed_at IS NULL"
    )
    return oldest


async def client_retries(db: Queryable) -> tuple[int, int]:
    """(client objects waiting for a retry, clients they belong to): processing_retries at a glance."""
    row = await _row(db, "SELECT count(*) AS objects, count(DISTINCT client_id) AS clients FROM processing_retries")
    return int(row["objects"]), int(row["clients"])


async def quarantine_counts(db: Queryable) -> tuple[int, int]:
    """(raw objects quarantined, client objects quarantined)."""
    row = await _row(
        db,
        "SELECT (SELECT count(*) FROM raw_objects WHERE quarantined_at IS NOT NULL) AS raw,"
        " (SELECT count(*) FROM processing_retries WHERE quarantined_at IS NOT NULL) AS client",
    )
    return int(row["raw"]), int(row["client"])


async def quarantined_raw_objects(db: Queryable, limit: int = 50) -> list[dict[str, Any]]:
    """Raw objects left alone after PROCESS_MAX_ATTEMPTS failures, the oldest first."""
    rows = await db.fetch(
        "SELECT key, process_attempts, process_error, quarantined_at FROM raw_objects"
        " WHERE quarantined_at IS NOT NULL ORDER BY quarantined_at, key LIMIT $1",
        limit,
    )
    return [
        {"key": r["key"], "attempts": int(r["process_attempts"]), "error": r["process_error"],
         "quarantined_at": _iso(r["quarantined_at"])}
        for r in rows
    ]  # fmt: skip


async def failing_clients(db: Queryable, limit: int = 50) -> list[dict[str, Any]]:
    """Clients whose objects wait for a retry (processing_retries), the longest waiting first."""
    rows = await db.fetch(
        "SELECT DISTINCT ON (client_id) client_id, count(*) OVER w AS objects, max(attempts) OVER w AS attempts,"
        " min(first_failed_at) OVER w AS failing_since, min(next_attempt_at) OVER w AS next_attempt_at,"
        " count(quarantined_at) OVER w AS quarantined,"
        " reason, last_error FROM processing_retries WINDOW w AS (PARTITION BY client_id)"
        " ORDER BY client_id, attempts DESC, next_attempt_at DESC"  # reason and error of a real attempt
    )
    ordered = sorted(rows, key=lambda r: (r["failing_since"], r["client_id"]))[:limit]
    return [
        {
            "client_id": r["client_id"],
            "objects": int(r["objects"]),
            "attempts": int(r["attempts"]),
            "failing_since": _iso(r["failing_since"]),
            "next_attempt_at": _iso(r["next_attempt_at"]),
            "reason": r["reason"],
            "error": r["last_error"],
            "quarantined_objects": int(r["quarantined"]),
        }
        for r in ordered
    ]


async def export_watermark(db: Queryable) -> int:
    """Every row with an id at or below it is in exactly one uploaded raw object."""
    value: int = await db.fetchval("SELECT watermark FROM export_state")
    return value


async def export_status(db: Queryable) -> dict[str, Any]:
    """Rows exported and pending, the last object, and the age of the oldest row not exported yet."""
    state = await _row(db, "SELECT watermark, updated_at, now() AS now FROM export_state")
    watermark: int = state["watermark"]
    exported = await _row(
        db,
        "SELECT count(*) AS objects, coalesce(sum(row_count), 0) AS rows FROM raw_objects"
        " WHERE exported_at IS NOT NULL",
    )
    pending = await db.fetchval("SELECT count(*) FROM events_log WHERE id > $1", watermark)
    oldest = await oldest_unexported(db, watermark)
    last = await db.fetchrow(
        "SELECT key, row_count, exported_at FROM raw_objects WHERE exported_at IS NOT NULL"
        " ORDER BY range_start DESC LIMIT 1"
    )
    claimed = await db.fetchval("SELECT count(*) FROM raw_objects WHERE exported_at IS NULL")
    lag = 0.0 if oldest is None else max(0.0, (state["now"] - oldest).total_seconds())
    return {
        "total_events": int(exported["rows"]) + int(pending),
        "exported_events": int(exported["rows"]),
        "pending_events": int(pending),
        "objects": int(exported["objects"]),
        "claimed_not_uploaded": int(claimed),
        "watermark_id": watermark,
        "last_object": None if last is None else {
            "key": last["key"], "events": last["row_count"], "exported_at": _iso(last["exported_at"]),
        },
        "oldest_unexported_event_at": _iso(oldest),
        "lag_seconds": round(lag, 3),
        "last_run": await _last_run(db, "export"),
    }  # fmt: skip


async def process_status(db: Queryable) -> dict[str, Any]:
    """Raw objects waiting for processing, the oldest of them, and the last run."""
    row = await _row(
        db,
        "SELECT count(*) AS waiting, coalesce(sum(row_count), 0) AS rows, min(exported_at) AS oldest, now() AS now"
        " FROM raw_objects WHERE exported_at IS NOT NULL AND processed_at IS NULL",
    )
    done = await _row(
        db,
        "SELECT count(*) AS objects, count(DISTINCT client_id) AS clients, coalesce(sum(row_count), 0) AS rows"
        " FROM processed_objects",
    )
    lag = 0.0 if row["oldest"] is None else max(0.0, (row["now"] - row["oldest"]).total_seconds())
    return {
        "unprocessed_raw_objects": int(row["waiting"]),
        "unprocessed_events": int(row["rows"]),
        "oldest_unprocessed_exported_at": _iso(row["oldest"]),
        "lag_seconds": round(lag, 3),
        "processed_objects": int(done["objects"]),
        "processed_events": int(done["rows"]),
        "clients": int(done["clients"]),
        # Client objects that failed (bad configuration, unreachable bucket) and wait with a growing delay.
        "retry_objects": (await client_retries(db))[0],
        "failing_clients": await failing_clients(db),
        # Left alone after PROCESS_MAX_ATTEMPTS failures until released (docs/pipeline.md): whole raw objects, and
        # the client objects counted per client in failing_clients.
        "quarantined_raw_objects": await quarantined_raw_objects(db),
        "quarantined_client_objects": (await quarantine_counts(db))[1],
        "last_run": await _last_run(db, "process"),
    }
