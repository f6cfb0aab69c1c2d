"""Retention: drop daily partitions of events_log older than RETENTION_DAYS, never one with unexported rows."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg

from collector.storage.database import SCHEMA_LOCK_KEY
from pipeline.status import export_watermark

logger = logging.getLogger(__name__)

_PARTITION = re.compile(r"events_log_p(\d{4})(\d{2})(\d{2})")


@dataclass(slots=True)
class RetentionResult:
    dropped: list[str] = field(default_factory=list)
    kept_unexported: list[str] = field(default_factory=list)  # old enough, but holding rows past the watermark


async def daily_partitions(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[str, date]]:
    """(name, day) of every daily partition of events_log, oldest first (the DEFAULT partition is not one)."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events_log'::regclass"
    )
    found = []
    for record in names:
        match = _PARTITION.fullmatch(record["relname"])
        if match:
            found.append((record["relname"], date(*map(int, match.groups()))))
    return sorted(found, key=lambda item: item[1])


async def drop_expired(conn: asyncpg.Connection, *, retention_days: int, today: date) -> RetentionResult:
    """Drop partitions whose day is more than `retention_days` before `today` and whose rows are all exported.

    Exported means: every row's id is at or below the export watermark, which moves only once the object holding
    it is uploaded (pipeline.export). A partition with a row past it is kept, and reported, until the export
    catches up.
    """
    result = RetentionResult()
    cutoff = today - timedelta(days=retention_days)
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
    try:
        for name, day in await daily_partitions(conn):
            if day >= cutoff:
                break
            async with conn.transaction():
                # Locked first: no flusher may add a row between the check and the drop.
                await conn.execute(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE')
                watermark = await export_watermark(conn)
                newest = await conn.fetchval(f'SELECT max(id) FROM "{name}"')
                if newest is not None and newest > watermark:
                    result.kept_unexported.append(name)
                    continue
                await conn.execute(f'DROP TABLE "{name}"')
            result.dropped.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
    if result.dropped:
        logger.info("Retention: dropped %s (older than %d days, all rows exported)",
                    ", ".join(result.dropped), retention_days)  # fmt: skip
    if result.kept_unexported:
        logger.warning("Retention: kept %s: rows not exported yet", ", ".join(result.kept_unexported))
    return result
