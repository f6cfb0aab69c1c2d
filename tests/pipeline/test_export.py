"""Stage 1 against real PostgreSQL and moto's S3 server: keys, the manifest, retries, crashes and concurrency."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import asyncpg
import pytest

from pipeline.export import Exporter, raw_key
from pipeline.formats import FORMATS
from pipeline.objects import ObjectStore, ObjectStoreError
from pipeline.process import Processor
from pipeline.scheduler import Pipeline, StageBusy
from tests.pipeline.conftest import MakeStore, insert_events, keys_of, read_events

KEY = re.compile(r"^raw-events/\d{4}/\d{2}/\d{2}/raw_export_\d{8}_\d{6}_(\d+)-(\d+)\.(?:json|ndjson\.gz|parquet)$")
# Exactly-once holds for every format: the tests of keys, outages and crashes run once per format.
each_format = pytest.mark.parametrize("fmt", FORMATS)


async def manifest(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM raw_objects ORDER BY range_start")


def assert_tiles(records: list[asyncpg.Record], watermark: int) -> None:
    """The manifest's ranges cover 1..watermark exactly once, every one uploaded."""
    expected_start = 1
    for record in records:
        assert record["range_start"] == expected_start
        assert record["exported_at"] is not None
        expected_start = record["last_id"] + 1
    assert expected_start - 1 == watermark


@each_format
async def test_export_writes_batches_under_deterministic_keys_and_records_the_manifest(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, fmt: str
) -> None:
    """25 rows at 10 per object give three objects named by their id ranges; a second run adds nothing."""
    store = await make_store()
    ids = await insert_events(db, 25)
    result = await Exporter(store, fmt=fmt, batch_size=10).run(conn)
    assert result.rows == 25 and result.objects == 3
    keys = await keys_of(store)
    ranges = sorted((int(m[1]), int(m[2])) for m in map(KEY.match, keys) if m)
    assert ranges == [(ids[0], ids[9]), (ids[10], ids[19]), (ids[20], ids[24])]
    exported = [e["id"] for key in keys for e in await read_events(store, key)]
    assert sorted(exported) == ids
    records = await manifest(db)
    assert [r["key"] for r in records] == sorted(keys, key=lambda k: int(KEY.match(k)[1]))  # type: ignore[index]
    assert [r["row_count"] for r in records] == [10, 10, 5]
    assert all(len(r["checksum"]) == 64 for r in records)
    assert_tiles(records, await db.fetchval("SELECT watermark FROM export_state"))

    again = await Exporter(store, fmt=fmt, batch_size=10).run(conn)
    assert again.rows == 0 and await keys_of(store) == keys


async def test_export_document_has_the_seed_shape(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """A json object is export_metadata + events, snake_case, with event_data as JSON (not a string)."""
    store = await make_store()
    await insert_events(db, 2, data={"button": "buy", "nested": {"list": [1, 2]}})
    result = await Exporter(store, fmt="json", batch_size=100).run(conn)
    import orjson

    document = orjson.loads(await store.get(result.keys[0]))
    meta = document["export_metadata"]
    assert meta["event_count"] == 2 and meta["format"] == "json" and meta["pipeline_stage"] == "raw"
    assert set(meta) >= {"export_id", "export_time", "time_range"}
    event = document["events"][0]
    assert event["event_data"] == {"button": "buy", "nested": {"list": [1, 2]}}
    assert {"event_id", "event_type", "client_id", "site_id", "received_at"} <= set(event)


@each_format
async def test_s3_down_for_a_cycle_then_back_leaves_no_gap_and_no_second_object(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, fmt: str
) -> None:
    """A failed upload marks nothing; the next run uploads the same range under the same key, once."""
    good = await make_store()
    with socket.socket() as probe:  # a loopback port where nothing listens: S3 is down
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    down = await make_store(good.location.bucket, endpoint=f"http://127.0.0.1:{dead_port}")
    ids = await insert_events(db, 7)
    with pytest.raises(ObjectStoreError):
        await Exporter(down, fmt=fmt, batch_size=100).run(conn)
    assert await db.fetchval("SELECT watermark FROM export_state") == 0
    claim = (await manifest(db))[0]
    assert claim["exported_at"] is None

    await insert_events(db, 3)  # arrives during the outage: the claimed range stays as it was
    result = await Exporter(good, fmt=fmt, batch_size=100).run(conn)
    assert result.keys[0] == claim["key"]
    keys = await keys_of(good)
    assert len(keys) == 2 and claim["key"] in keys
    assert sorted([e["id"] for k in keys for e in await read_events(good, k)]) == list(range(ids[0], ids[0] + 10))
    assert_tiles(await manifest(db), await db.fetchval("SELECT watermark FROM export_state"))


class CrashAfterUpload:
    """Our own ObjectStore seam: uploads through the real store, then dies before the run can mark anything."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.name = store.name
        self.destination = store.destination

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        await self.store.put(key, body, content_type)
        raise SystemExit("process killed after the upload")

    async def get(self, key: str) -> bytes:
        return await self.store.get(key)

    def list_keys(self, prefix: str) -> Any:
        return self.store.list_keys(prefix)


@each_format
async def test_crash_between_upload_and_watermark_rewrites_the_same_key(
    db: asyncpg.Connection, database_url: str, make_store: MakeStore, fmt: str
) -> None:
    """A run killed after its upload leaves the claim; the next run rewrites that key with the same bytes."""
    store = await make_store()
    await insert_events(db, 5, data={"step": 1})
    dying = await asyncpg.connect(database_url)
    with pytest.raises(SystemExit):
        await Exporter(CrashAfterUpload(store), fmt=fmt, batch_size=100).run(dying)
    dying.terminate()
    first = await keys_of(store)
    assert len(first) == 1 and await db.fetchval("SELECT watermark FROM export_state") == 0
    uploaded = await store.get(first[0])

    fresh = await asyncpg.connect(database_url)
    try:
        result = await Exporter(store, fmt=fmt, batch_size=100).run(fresh)
    finally:
        await fresh.close()
    assert result.keys == first and await keys_of(store) == first
    assert await store.get(first[0]) == uploaded  # the same rows give the same object (and checksum)
    assert [e["id"] for e in await read_events(store, first[0])] == list(range(1, 6))
    assert_tiles(await manifest(db), 5)


async def test_two_exporters_at_once_write_exactly_one_object_per_range(
    db: asyncpg.Connection, database_url: str, make_store: MakeStore
) -> None:
    """Two pipelines (two workers or instances) exporting together: one runs, the other is told it is busy."""
    store = await make_store()
    await insert_events(db, 3000)

    def pipeline() -> Pipeline:
        processor = Processor(store, None, ip_hash_secret="s")  # type: ignore[arg-type]  # not run here
        exporter = Exporter(store, fmt="json", batch_size=200)
        return Pipeline(database_url, exporter, processor, retention_days=7, export_interval_s=60,
                        process_interval_s=60)  # fmt: skip

    outcomes = await asyncio.gather(pipeline().run_export(), pipeline().run_export(), return_exceptions=True)
    busy = [o for o in outcomes if isinstance(o, StageBusy)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(done) + len(busy) == 2 and done, outcomes
    keys = await keys_of(store)
    assert len(keys) == 15
    records = await manifest(db)
    assert len(records) == 15
    assert_tiles(records, 3000)


async def test_the_manifest_refuses_overlapping_ranges_even_without_the_lock(
    db: asyncpg.Connection, database_url: str, make_store: MakeStore
) -> None:
    """Two exporters that skip the lock cannot both claim the same rows: one fails, and no row is doubled."""
    store = await make_store()
    await insert_events(db, 500)
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        outcomes = await asyncio.gather(
            Exporter(store, fmt="json", batch_size=100).run(first),
            Exporter(store, fmt="json", batch_size=100).run(second),
            return_exceptions=True,
        )
    finally:
        await first.close()
        await second.close()
    records = await manifest(db)
    exported_ids = [e["id"] for r in records for e in await read_events(store, r["key"])]
    assert len(exported_ids) == len(set(exported_ids))
    assert all(isinstance(o, asyncpg.PostgresError) or not isinstance(o, BaseException) for o in outcomes), outcomes


async def test_a_row_committed_after_a_higher_numbered_one_is_not_skipped(
    db: asyncpg.Connection, database_url: str, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """Writer A takes id 1 and commits after writer B's id 2: an export in between waits, and exports both."""
    store = await make_store()
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        await a.execute("BEGIN")
        await a.fetchval("SELECT pg_current_xact_id()")
        id_a = await a.fetchval(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, event_timestamp, received_at)"
            " VALUES (gen_random_uuid(), 'slow', 'acme.com', 'c', now(), now()) RETURNING id"
        )
        ids_b = await insert_events(b, 1)
        assert ids_b[0] > id_a
        # While A is open the export must not pass id 1; with a short wait it exports nothing.
        impatient = await Exporter(store, fmt="json", batch_size=100, settle_timeout_s=0.3).run(conn)
        assert impatient.rows == 0 and impatient.waiting_for_xid is not None
        # A patient export waits for A, which commits meanwhile: both rows, one object, nothing skipped.
        export = asyncio.create_task(Exporter(store, fmt="json", batch_size=100, settle_timeout_s=10).run(conn))
        await asyncio.sleep(0.3)
        assert not export.done()
        await a.execute("COMMIT")
        result = await export
    finally:
        await a.close()
        await b.close()
    assert result.rows == 2
    assert sorted([e["id"] for e in await read_events(store, result.keys[0])]) == [id_a, ids_b[0]]


async def test_raw_key_is_a_function_of_time_and_range() -> None:
    """The key names the range it holds; the same range and claim time always give the same key."""
    from datetime import UTC, datetime

    when = datetime(2026, 11, 28, 9, 5, 7, tzinfo=UTC)
    key = raw_key(when, 11, 20, "ndjson.gz")
    assert key == "raw-events/2026/11/28/raw_export_20261128_090507_11-20.ndjson.gz"
    assert raw_key(when, 11, 20, "ndjson.gz") == key
