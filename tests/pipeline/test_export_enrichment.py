"""Raw exports carry the enrichment columns in every format, typed in parquet."""

from __future__ import annotations

import asyncpg
import pytest

from pipeline.export import Exporter
from pipeline.formats import FORMATS
from tests.pipeline.conftest import MakeStore, insert_events, read_events

ENRICHED = {
    "consent": "granted", "bot": True, "bot_reason": "crawler", "browser_family": "Chrome", "browser_version": "131",
    "os_family": "Windows", "os_version": "10", "device_type": "desktop", "country": "US", "region": "CA",
    "city": "San Francisco",
}  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
async def test_exported_events_carry_the_enrichment_columns(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, fmt: str
) -> None:
    """An enriched row reads back from a raw object (json, ndjson.gz, parquet) with each column and its value."""
    store = await make_store()
    (row_id,) = await insert_events(db, 1)
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(ENRICHED, start=2))
    await db.execute(f"UPDATE events_log SET {assignments} WHERE id = $1", row_id, *ENRICHED.values())
    result = await Exporter(store, fmt=fmt, batch_size=10).run(conn)
    (event,) = await read_events(store, result.keys[0])
    assert {name: event[name] for name in ENRICHED} == ENRICHED
