"""Object stores: S3 through aioboto3 against moto (listing past 1,000 keys), the local directory store, DuckDB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import duckdb
import pytest

from pipeline.export import Exporter
from pipeline.objects import LocalStore, check_key
from tests.pipeline.conftest import MakeStore, insert_events, keys_of


async def test_listing_pages_past_a_thousand_keys(make_store: MakeStore) -> None:
    """1,005 objects under one prefix are all listed (S3 returns at most 1,000 keys per page)."""
    store = await make_store()
    semaphore = asyncio.Semaphore(32)

    async def put(n: int) -> None:
        async with semaphore:
            await store.put(f"raw-events/2026/11/28/obj_{n:05d}.json", b"{}", "application/json")

    await asyncio.gather(*(put(n) for n in range(1005)))
    await store.put("elsewhere/one.json", b"{}", "application/json")
    keys = await keys_of(store, "raw-events/")
    assert len(keys) == 1005 and len(set(keys)) == 1005


async def test_local_store_exports_under_the_same_keys(
    db: asyncpg.Connection, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Without buckets (development), objects land in a directory, at the key the bucket would have."""
    store = LocalStore(tmp_path / "raw")
    await insert_events(db, 3)
    result = await Exporter(store, fmt="json", batch_size=100).run(conn)
    path = tmp_path / "raw" / result.keys[0]
    assert path.is_file() and await keys_of(store) == result.keys
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/key", "a//b", "raw-events/../../x", "", "a\\b"])
def test_unsafe_keys_are_refused(key: str) -> None:
    """A key can never climb out of the store's root."""
    with pytest.raises(ValueError):
        check_key(key)


@pytest.mark.parametrize(
    ("fmt", "reader"), [("ndjson.gz", "read_ndjson"), ("json", "read_json"), ("parquet", "read_parquet")]
)
async def test_duckdb_reads_the_exported_objects_as_they_are(
    db: asyncpg.Connection, conn: asyncpg.Connection, tmp_path: Path, fmt: str, reader: str
) -> None:
    """DuckDB's read_ndjson / read_json / read_parquet open the objects directly, with the right row count and
    columns."""
    store = LocalStore(tmp_path / "raw")
    await insert_events(db, 12, data={"button": "buy"}, client_id="client_duck")
    result = await Exporter(store, fmt=fmt, batch_size=100).run(conn)
    path = str(tmp_path / "raw" / result.keys[0])
    with duckdb.connect() as duck:
        if fmt == "json":
            query = f"SELECT count(*), min(e.client_id) FROM (SELECT unnest(events) AS e FROM {reader}('{path}'))"
        else:
            query = f"SELECT count(*), min(client_id) FROM {reader}('{path}')"
        count, client = duck.execute(query).fetchone()  # type: ignore[misc]
    assert (count, client) == (12, "client_duck")
