"""Retention drops old daily partitions once all their rows are exported, and never one holding unexported rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg

from pipeline.export import Exporter
from pipeline.retention import daily_partitions, drop_expired
from tests.pipeline.conftest import MakeStore, insert_events


async def make_partition(db: asyncpg.Connection, day: date) -> str:
    name = f"events_log_p{day:%Y%m%d}"
    await db.execute(
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events_log"
        f" FOR VALUES FROM ('{day} 00:00:00+00') TO ('{day + timedelta(days=1)} 00:00:00+00')"
    )
    return name


async def test_retention_drops_exported_partitions_and_keeps_unexported_ones(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """Of two partitions past RETENTION_DAYS, the exported one is dropped; the one with newer rows stays."""
    today = datetime.now(UTC).date()
    old, older = today - timedelta(days=9), today - timedelta(days=10)
    older_name, old_name = await make_partition(db, older), await make_partition(db, old)
    recent_name = await make_partition(db, today - timedelta(days=3))
    await insert_events(db, 5, received_at=datetime(older.year, older.month, older.day, 12, tzinfo=UTC))
    store = await make_store()
    await Exporter(store, fmt="json", batch_size=100).run(conn)
    await insert_events(db, 4, received_at=datetime(old.year, old.month, old.day, 12, tzinfo=UTC))
    await insert_events(db, 2, received_at=datetime.combine(today - timedelta(days=3), datetime.min.time(), UTC))

    result = await drop_expired(conn, retention_days=7, today=today)

    assert result.dropped == [older_name] and result.kept_unexported == [old_name]
    names = [name for name, _ in await daily_partitions(db)]
    assert older_name not in names and old_name in names and recent_name in names
    assert await db.fetchval("SELECT count(*) FROM events_log") == 6

    await Exporter(store, fmt="json", batch_size=100).run(conn)
    again = await drop_expired(conn, retention_days=7, today=today)
    assert again.dropped == [old_name] and again.kept_unexported == []
    assert await db.fetchval("SELECT count(*) FROM events_log") == 2
