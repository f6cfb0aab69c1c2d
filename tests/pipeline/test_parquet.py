"""Parquet objects against real PostgreSQL, moto's S3 server, pyarrow and DuckDB: the schema, the Hive layout, and
every processed event read back once by the engines users point at the output."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline import offload
from pipeline.arrow import SCHEMA, read_metadata
from pipeline.clients import Destination
from pipeline.export import Exporter
from pipeline.formats import decode_events, open_writer
from pipeline.objects import ObjectStoreError, S3Store
from pipeline.privacy import POLICY_VERSION
from tests.pipeline.conftest import (
    REGION,
    MakeProcessor,
    MakeStore,
    create_bucket,
    insert_events,
    keys_of,
    read_events,
)

HIVE_KEY = re.compile(
    r"processed-events/client_id=([A-Za-z0-9_.-]+)/date=(\d{4}-\d{2}-\d{2})/processed_raw_export_[0-9_]+-[0-9]+\.parquet"
)
PARTITIONS = pa.schema([("client_id", pa.string()), ("date", pa.date32())])


def s3_filesystem(store: S3Store) -> pafs.S3FileSystem:
    """pyarrow's own S3 client on the same moto endpoint (what a user's pyarrow.dataset would open)."""
    endpoint = store.location.endpoint_url or ""
    return pafs.S3FileSystem(
        access_key="testing", secret_key="testing", region=REGION,
        endpoint_override=endpoint.removeprefix("http://"), scheme="http",
    )  # fmt: skip


async def mirror(store: S3Store, root: Path) -> Path:
    """The bucket's objects as files under `root`, at their keys (DuckDB here has no S3 extension to fetch them)."""
    for key in await keys_of(store):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(await store.get(key))
    return root


async def test_a_raw_parquet_object_has_the_documented_schema_zstd_and_the_export_metadata(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """Typed columns (UTC microsecond timestamps, string ids, JSON text), zstd, one row group, metadata in the file."""
    store = await make_store()
    ids = await insert_events(db, 30, data={"button": "buy", "n": [1, 2]}, ip="198.51.100.7", user_agent="curl/8")
    result = await Exporter(store, fmt="parquet", batch_size=100).run(conn)
    body = await store.get(result.keys[0])

    file = pq.ParquetFile(pa.BufferReader(body))
    assert file.schema_arrow.remove_metadata() == SCHEMA
    assert file.schema_arrow.field("received_at").type == pa.timestamp("us", tz="UTC")
    assert file.metadata.num_row_groups == 1 and file.metadata.num_rows == 30
    group = file.metadata.row_group(0)
    assert {group.column(i).compression for i in range(group.num_columns)} == {"ZSTD"}
    table = file.read()
    assert table.column("id").to_pylist() == ids
    assert [orjson.loads(v) for v in table.column("event_data").to_pylist()] == [{"button": "buy", "n": [1, 2]}] * 30
    assert set(table.column("ip").to_pylist()) == {"198.51.100.7"}
    metadata = read_metadata(body, "export_metadata")
    assert metadata is not None and metadata["event_count"] == 30 and metadata["format"] == "parquet"
    assert metadata["id_range"] == {"first": ids[0], "last": ids[-1]}


async def test_a_parquet_raw_object_reads_back_as_the_events_of_a_json_one(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """The same rows in parquet decode to exactly the events json carries, so processing is the same for both."""
    store = await make_store()
    await insert_events(db, 5, data={"q": "ünï", "nested": {"a": None, "b": [1.5, True]}}, ip="2001:db8::1",
                        url="https://acme.com/p?x=1", referrer=None)  # fmt: skip
    await insert_events(db, 3, data=None, user_agent="Mozilla/5.0 Firefox/120.0")
    result = await Exporter(store, fmt="json", batch_size=100).run(conn)
    events = await read_events(store, result.keys[0])
    writer = open_writer("parquet", "export_metadata")
    for event in events:
        writer.add(orjson.dumps(event))

    assert decode_events("parquet", writer.finish({"event_count": len(events)})) == events


async def test_processed_parquet_is_one_hive_dataset_that_duckdb_and_pyarrow_read_each_event_once(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    make_store: MakeStore,
    make_processor: MakeProcessor,
    tmp_path: Path,
) -> None:
    """Three clients over two receive days and several raw objects: every event once, under its client and day."""
    raw, processed = await make_store(), await make_store()
    yesterday = datetime.now(UTC).replace(hour=12, minute=0) - timedelta(days=1)
    await insert_events(db, 9, received_at=yesterday, ip="198.51.100.7", data={"email": "a@b.com", "k": 1})
    await insert_events(db, 6, client_id="client_eu_shop", site_id="eu-shop.com", received_at=yesterday,
                        ip="198.51.100.8")  # fmt: skip
    await insert_events(db, 11, ip="198.51.100.7")
    await insert_events(db, 4, client_id="client_eu_shop", site_id="eu-shop.com", ip="198.51.100.8")
    await insert_events(db, 5, client_id="client_no_ip", site_id="no-ip.com")
    await Exporter(raw, fmt="parquet", batch_size=8).run(conn)
    processor = await make_processor(raw, processed, fmt="parquet")
    result = await processor.run(conn)
    expected = {
        (str(r["event_id"]), r["client_id"], r["day"])
        for r in await db.fetch(
            "SELECT event_id, client_id, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day FROM events_log"
        )
    }
    assert result.rows == 35 and len(expected) == 35

    keys = await keys_of(processed)
    assert all(HIVE_KEY.fullmatch(key) for key in keys), keys
    assert {m[1] for m in map(HIVE_KEY.fullmatch, keys) if m} == {"client_acme_corp", "client_eu_shop", "client_no_ip"}
    metadata = read_metadata(await processed.get(keys[0]), "process_metadata")
    assert metadata is not None and metadata["policy_version"] == POLICY_VERSION
    assert metadata["date"] == HIVE_KEY.fullmatch(keys[0])[2]  # type: ignore[index]

    root = await mirror(processed, tmp_path / "bucket")
    with duckdb.connect() as duck:
        rows = duck.execute(
            f"SELECT event_id, regexp_extract(filename, 'client_id=([^/]+)', 1) AS part, client_id,"
            f" CAST(date AS VARCHAR), typeof(date), typeof(event_timestamp), typeof(received_at), typeof(id), ip"
            f" FROM read_parquet('{root}/processed-events/*/*/*.parquet', hive_partitioning = true, filename = true)"
        ).fetchall()
    assert len(rows) == 35 and {(r[0], r[1], r[3]) for r in rows} == expected
    assert all(r[1] == r[2] for r in rows)  # the partition and the column agree
    assert {r[4:8] for r in rows} == {("DATE", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE", "BIGINT")}
    assert {r[8] for r in rows if r[1] == "client_eu_shop"} == {None}  # gdpr: no address in the output
    assert {r[8] for r in rows if r[1] == "client_acme_corp"} == {"198.51.100.7"}

    bucket = processed.location.bucket
    dataset = ds.dataset(
        f"{bucket}/processed-events", filesystem=s3_filesystem(processed), format="parquet",
        partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
    )  # fmt: skip
    table = dataset.to_table(columns=["event_id", "client_id", "date", "received_at"])
    assert table.schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    days = [t.astimezone(UTC).date() for t in table.column("received_at").to_pylist()]
    assert days == table.column("date").to_pylist()
    found = zip(table.column("event_id").to_pylist(), table.column("client_id").to_pylist(), days, strict=True)
    assert sorted((e, c, d.isoformat()) for e, c, d in found) == sorted(expected)
    day = ds.field("date") == yesterday.date()
    pruned = dataset.to_table(filter=(ds.field("client_id") == "client_eu_shop") & day)
    assert pruned.num_rows == 6


@pytest.mark.parametrize(
    ("raw_fmt", "fmt"), [("json", "parquet"), ("parquet", "json"), ("parquet", "ndjson.gz"), ("ndjson.gz", "parquet")]
)
async def test_mixed_formats_process_to_the_same_events(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    make_store: MakeStore,
    make_processor: MakeProcessor,
    raw_fmt: str,
    fmt: str,
) -> None:
    """A raw object of one format processed into another gives the events processing it into json gives."""
    raw, baseline, processed = await make_store(), await make_store(), await make_store()
    data = {"email": "a@b.com", "note": "call +1 415 555 0100", "ok": [1, {"x": None}]}
    await insert_events(db, 4, data=data, ip="198.51.100.7", user_agent="Mozilla/5.0 Firefox/120.0",
                        url="https://acme.com/?email=a%40b.com")  # fmt: skip
    await insert_events(db, 3, client_id="client_eu_shop", site_id="eu-shop.com", data=data, ip="198.51.100.8")
    await Exporter(raw, fmt=raw_fmt, batch_size=100).run(conn)
    await (await make_processor(raw, baseline)).run(conn)
    await db.execute("UPDATE raw_objects SET processed_at = NULL")  # the same raw object once more, in `fmt`

    result = await (await make_processor(raw, processed, fmt=fmt)).run(conn)

    def by_id(events: list[dict[str, object]]) -> list[dict[str, object]]:
        return sorted(events, key=lambda e: str(e["event_id"]))

    expected = by_id([e for key in await keys_of(baseline) for e in await read_events(baseline, key)])
    got = by_id([e for key in await keys_of(processed) for e in await read_events(processed, key)])
    assert result.rows == 7 and len(got) == 7 and got == expected
    assert all(key.endswith("." + fmt) for key in await keys_of(processed))


def test_an_unreadable_parquet_object_is_refused_by_name() -> None:
    """Bytes that are not parquet raise UnreadableObject (the raw object waits), never a pyarrow error."""
    from pipeline.formats import UnreadableObject

    with pytest.raises(UnreadableObject, match="not a parquet object"):
        decode_events("parquet", b"PAR1 this is not a parquet file " + uuid.uuid4().bytes)


def test_pyarrow_is_imported_only_where_parquet_is_written_or_read() -> None:
    """A process that exports, processes and renders json, or collects a parquet object's rows, never loads pyarrow;
    finishing or reading a parquet object does (export finishes them in the worker process)."""
    script = (
        "import sys\n"
        "import collector.app, pipeline.scheduler, pipeline.render\n"
        "from pipeline.formats import encode, decode_events\n"
        "body = encode('json', 'export_metadata', {}, [{'client_id': 'c', 'event_id': '1'}])\n"
        "pipeline.render.scan('json', body, None)\n"
        "assert decode_events('ndjson.gz', encode('ndjson.gz', 'm', {}, [{'a': 1}])) == [{'a': 1}]\n"
        "from pipeline.formats import open_writer\n"
        "writer = open_writer('parquet', 'export_metadata')\n"
        "writer.add(b'{\"id\": 7}')\n"
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported before a parquet object is finished or read'\n"
        "assert decode_events('parquet', writer.finish({}))[0]['id'] == 7\n"
        "assert 'pyarrow' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def test_a_client_whose_bucket_fails_gets_each_day_once_on_its_retry(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor,
    moto_url: str,
) -> None:  # fmt: skip
    """A client's missing bucket defers its two days of parquet; once it exists, the retry writes each day's object
    with every event once, and the other client is never held up."""
    own_bucket = f"own-{uuid.uuid4().hex[:12]}"
    raw, shared = await make_store(), await make_store()
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await insert_events(db, 3, received_at=yesterday)
    await insert_events(db, 4)
    await insert_events(db, 2, client_id="client_eu_shop", site_id="eu-shop.com")
    exported = await Exporter(raw, fmt="parquet", batch_size=100).run(conn)
    processor = await make_processor(raw, shared, {"client_acme_corp": Destination(own_bucket, "")}, fmt="parquet")
    processor.retry_base_s = 0.0  # due again at once

    first = await processor.run(conn)
    assert first.deferred == {"client_acme_corp": 1} and first.rows == 2
    assert [HIVE_KEY.fullmatch(k)[1] for k in await keys_of(shared)] == ["client_eu_shop"]  # type: ignore[index]

    await create_bucket(moto_url, own_bucket)
    second = await processor.run(conn)

    own = await make_store(own_bucket)
    keys = await keys_of(own)
    days = sorted(HIVE_KEY.fullmatch(k)[2] for k in keys)  # type: ignore[index]
    assert second.rows == 7 and second.deferred == {} and len(keys) == 2
    received = "SELECT DISTINCT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM events_log ORDER BY 1"
    assert days == [r[0] for r in await db.fetch(received)] and len(days) == 2
    events = [e for key in keys for e in await read_events(own, key)]
    assert len(events) == 7 and len({e["event_id"] for e in events}) == 7
    assert await db.fetchval("SELECT count(*) FROM processing_retries") == 0
    assert await db.fetchval("SELECT count(*) FROM processed_objects WHERE raw_key = $1", exported.keys[0]) == 3


async def test_a_worker_process_killed_before_a_parquet_export_leaves_the_claim_for_the_next_run(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore
) -> None:
    """The worker that writes parquet objects dies (killed, out of memory): that run fails like an upload (nothing
    marked), and the next run writes the same key once."""
    store = await make_store()
    await insert_events(db, 4)
    os.kill(await offload.run(os.getpid), signal.SIGKILL)
    with pytest.raises(ObjectStoreError, match="worker process died"):
        for _ in range(50):  # until the pool has noticed its worker is gone
            await Exporter(store, fmt="parquet", batch_size=100).run(conn)
            await asyncio.sleep(0.05)
    assert await keys_of(store) == [] and await db.fetchval("SELECT watermark FROM export_state") == 0

    result = await Exporter(store, fmt="parquet", batch_size=100).run(conn)

    assert result.rows == 4 and await keys_of(store) == result.keys
    assert [e["id"] for e in await read_events(store, result.keys[0])] == [1, 2, 3, 4]


FULLWIDTH_DAY = "\uff12\uff10\uff12\uff16-\uff11\uff11-\uff12\uff19"  # 2026-11-29 in fullwidth digits


@pytest.mark.parametrize("day", ["2026-1-01", "../2026-11-29", FULLWIDTH_DAY, "2026-11-29\n"])
def test_a_processed_key_refuses_a_day_that_is_not_one(day: str) -> None:
    """A day becomes a path segment: only YYYY-MM-DD in ASCII digits is one."""
    from pipeline.layout import NotAKey, processed_key

    raw = "raw-events/2026/11/29/raw_export_20261129_120000_1-10.parquet"
    assert processed_key(raw, "client_a", fmt="parquet", day="2026-11-28").endswith(
        "client_id=client_a/date=2026-11-28/processed_raw_export_20261129_120000_1-10.parquet"
    )
    with pytest.raises(NotAKey):
        processed_key(raw, "client_a", fmt="parquet", day=day)
