"""The optional Iceberg table against real parts: pyiceberg's SQL catalog in the test PostgreSQL, a warehouse in
moto's S3 server or a local folder, processing in the worker process; every processed event in the table once,
across a crash before or after the catalog commit and across re-runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from collector.settings import BucketSettings, Settings, SettingsError
from pipeline import offload
from pipeline.arrow import SCHEMA
from pipeline.export import Exporter
from pipeline.formats import encode
from pipeline.iceberg import IcebergTable
from pipeline.iceberg_commit import commit
from pipeline.iceberg_target import CATALOG_NAME, CLIENTS_PROPERTY, RAW_KEY_PROPERTY, IcebergTarget
from pipeline.objects import LocalStore, ObjectStore
from pipeline.process import Processor
from tests.conftest import MakeApp, wait_for_rows
from tests.pipeline.conftest import REGION, MakeProcessor, MakeStore, insert_events, keys_of, read_events

CATALOG_DATABASE = "iceberg_catalog"
COMMIT_TIME = re.compile(r"appended in ([0-9.]+) s")


class SimulatedCrash(Exception):
    """What the checkpoint raises in the worker process, standing for the process dying at that step."""


@dataclass(frozen=True)
class CrashAt:
    """A Checkpoint (picklable: it runs in the worker process) that fails the commit at `step`."""

    step: str

    def __call__(self, step: str) -> None:
        if step == self.step:
            raise SimulatedCrash(f"crashed at {step}")


@pytest.fixture
async def catalog_uri(database_url: str, db: asyncpg.Connection) -> str:
    """A SQLAlchemy URI of a database of its own on the test PostgreSQL, for the catalog's tables."""
    if not await db.fetchval("SELECT true FROM pg_database WHERE datname = $1", CATALOG_DATABASE):
        await db.execute(f"CREATE DATABASE {CATALOG_DATABASE}")
    return urlsplit(database_url)._replace(path=f"/{CATALOG_DATABASE}").geturl()


@pytest.fixture
def table_name() -> str:
    """A namespace of this test's own: the catalog database outlives each test's warehouse."""
    return f"t_{uuid.uuid4().hex[:12]}.events"


async def s3_target(catalog_uri: str, table_name: str, make_store: MakeStore, moto_url: str) -> IcebergTarget:
    """The target Settings make of an s3:// warehouse in a new moto bucket, reached as the processed bucket is."""
    bucket = (await make_store()).location.bucket
    settings = Settings(
        iceberg_catalog_uri=catalog_uri, iceberg_warehouse=f"s3://{bucket}/warehouse", iceberg_table=table_name,
        s3_endpoint_url=moto_url, processed=BucketSettings(access_key="testing", secret_key="testing", region=REGION),
    )  # fmt: skip
    target = IcebergTarget.from_settings(settings)
    assert target is not None
    return target


def load(target: IcebergTarget) -> Table:
    """The table as a reader (Spark, Trino, ...) finds it through the same catalog."""
    with SqlCatalog(CATALOG_NAME, uri=target.catalog_uri, warehouse=target.warehouse, **dict(target.io)) as catalog:
        return catalog.load_table(target.table)  # scans and snapshots read the warehouse, not the catalog


def scanned(target: IcebergTarget) -> pa.Table:
    return load(target).scan().to_arrow()


async def processed_event_ids(store: ObjectStore) -> Counter[str]:
    ids: Counter[str] = Counter()
    for key in await keys_of(store, "processed-events/"):
        ids.update(str(event["event_id"]) for event in await read_events(store, key))
    return ids


def marked(target: IcebergTarget) -> list[tuple[str, str]]:
    """(raw key, clients) of each snapshot that appended rows."""
    snapshots = load(target).snapshots()
    properties = [s.summary.additional_properties for s in snapshots if s.summary is not None]
    return [(p[RAW_KEY_PROPERTY], p[CLIENTS_PROPERTY]) for p in properties if RAW_KEY_PROPERTY in p]


async def with_table(processor: Processor, target: IcebergTarget, checkpoint: CrashAt | None = None) -> Processor:
    processor.table = IcebergTable(target, checkpoint)
    return processor


async def test_every_processed_event_is_in_the_table_once_partitioned_by_client_and_receive_day(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor,
    catalog_uri: str, table_name: str, moto_url: str,
) -> None:  # fmt: skip
    """Two clients' processed parquet rows land in an s3:// warehouse table, each event once, as processed (gdpr:
    no IP), in client and day partitions, one snapshot per raw object naming it and its clients."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 40, ip="198.51.100.7")
    await insert_events(db, 25, client_id="client_eu_shop", site_id="eu-shop.com", ip="198.51.100.8")
    exported = await Exporter(raw, fmt="ndjson.gz", batch_size=30).run(conn)
    target = await s3_target(catalog_uri, table_name, make_store, moto_url)
    processor = await with_table(await make_processor(raw, processed, fmt="parquet"), target)

    result = await processor.run(conn)

    assert result.raw_objects == 3 and result.failed == [] and result.deferred == {}
    rows = scanned(target)
    assert Counter(rows.column("event_id").to_pylist()) == await processed_event_ids(processed)
    assert rows.num_rows == 65 and len(set(rows.column("event_id").to_pylist())) == 65
    by_client = Counter(rows.column("client_id").to_pylist())
    assert by_client == {"client_acme_corp": 40, "client_eu_shop": 25}
    ips = {(r["client_id"], r["ip"]) for r in rows.select(["client_id", "ip"]).to_pylist()}
    assert ips == {("client_acme_corp", "198.51.100.7"), ("client_eu_shop", None)}
    table = load(target)
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == [
        ("client_id", "identity"), ("received_at_day", "day"),
    ]  # fmt: skip
    assert table.schema().as_arrow().names == SCHEMA.names
    files = table.inspect.files().column("file_path").to_pylist()
    assert files and all(f.startswith(f"{target.warehouse}/") and "/client_id=client_" in f for f in files)
    assert all("/received_at_day=" in f for f in files)
    assert sorted(key for key, _ in marked(target)) == sorted(exported.keys)


async def test_a_crash_between_writing_the_data_files_and_the_commit_leaves_orphans_then_commits_once(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor,
    catalog_uri: str, table_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The commit failing after its data files are in the (local) warehouse publishes no row and retries each
    client; the retry commits every event once, and the first attempt's files stay unreferenced."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 12)
    await insert_events(db, 8, client_id="client_eu_shop", site_id="eu-shop.com")
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    lake = str(tmp_path / "lake")  # a folder, as ICEBERG_WAREHOUSE may name one
    target = IcebergTarget.from_settings(
        Settings(iceberg_catalog_uri=catalog_uri, iceberg_warehouse=lake, iceberg_table=table_name)
    )
    assert target is not None and target.warehouse.startswith("file:///")
    processor = await with_table(await make_processor(raw, processed, fmt="json"), target, CrashAt("written"))

    crashed = await processor.run(conn)

    assert crashed.deferred == {"client_acme_corp": 1, "client_eu_shop": 1} and crashed.client_objects == 0
    assert scanned(target).num_rows == 0 and marked(target) == []
    orphans = {p for p in (tmp_path / "lake").rglob("*.parquet")}
    assert orphans  # written by the failed attempt, named by no snapshot
    await conn.execute("UPDATE processing_retries SET next_attempt_at = now()")
    await with_table(processor, target)

    retried = await processor.run(conn)

    assert retried.client_objects == 2 and retried.deferred == {}
    assert await conn.fetchval("SELECT count(*) FROM processing_retries") == 0
    rows = scanned(target)
    assert Counter(rows.column("event_id").to_pylist()) == await processed_event_ids(processed)
    assert rows.num_rows == 20
    referenced = {p.removeprefix("file://") for p in load(target).inspect.files().column("file_path").to_pylist()}
    assert not referenced & {str(p) for p in orphans}


async def test_a_crash_after_the_commit_before_the_manifest_is_not_committed_again(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor,
    catalog_uri: str, table_name: str, moto_url: str,
) -> None:  # fmt: skip
    """A commit that reached the catalog but not processing's manifest is found by its snapshot's marker on the
    retry, which writes the objects again but appends nothing: each event stays in the table once."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 15)
    await Exporter(raw, fmt="ndjson.gz", batch_size=100).run(conn)
    target = await s3_target(catalog_uri, table_name, make_store, moto_url)
    processor = await with_table(await make_processor(raw, processed, fmt="ndjson.gz"), target, CrashAt("committed"))

    crashed = await processor.run(conn)

    assert crashed.deferred == {"client_acme_corp": 1}
    assert scanned(target).num_rows == 15  # published, though processing counts the client as failed
    await conn.execute("UPDATE processing_retries SET next_attempt_at = now()")
    await with_table(processor, target)

    retried = await processor.run(conn)

    assert retried.client_objects == 1 and await conn.fetchval("SELECT count(*) FROM processing_retries") == 0
    rows = scanned(target)
    assert rows.num_rows == 15 and Counter(rows.column("event_id").to_pylist()) == await processed_event_ids(processed)
    assert len(marked(target)) == 1


async def test_processing_the_same_raw_object_twice_commits_its_rows_once(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor,
    catalog_uri: str, table_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    """A raw object processed again (marked unprocessed, as after a crash before the manifest) rewrites its objects
    and leaves the table as it was: no second snapshot, no second row."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 30)
    await Exporter(raw, fmt="parquet", batch_size=100).run(conn)
    target = IcebergTarget(catalog_uri, (tmp_path / "lake").as_uri(), table_name)
    processor = await with_table(await make_processor(raw, processed, fmt="parquet"), target)
    started = time.perf_counter()
    assert (await processor.run(conn)).client_objects == 1
    first = time.perf_counter() - started
    snapshots = len(load(target).snapshots())
    await conn.execute("UPDATE raw_objects SET processed_at = NULL")

    again = await processor.run(conn)

    assert again.raw_objects == 1 and again.client_objects == 1
    assert len(load(target).snapshots()) == snapshots
    assert Counter(scanned(target).column("event_id").to_pylist()) == await processed_event_ids(processed)
    assert scanned(target).num_rows == 30
    print(f"\nfirst processing run with the Iceberg commit (table created): {first:.2f} s")


def test_a_client_retried_alone_is_committed_in_a_snapshot_of_its_own_and_then_never_again(
    catalog_uri: str, table_name: str, tmp_path: Path
) -> None:
    """Clients of one raw object committed in two snapshots (one retried later) are both found by the marker check:
    committing all of them again appends nothing (pyiceberg in this process, as the worker runs it)."""
    target = IcebergTarget(catalog_uri, (tmp_path / "lake").as_uri(), table_name)
    key = "raw-events/2026/11/29/raw_export_20261129_120000_1-3.json"

    def body(client_id: str, n: int) -> bytes:
        events = [{"id": n, "event_id": str(uuid.uuid4()), "client_id": client_id, "event_data": {"n": n},
                   "received_at": "2026-11-29T12:00:00.000000Z"}]  # fmt: skip
        return encode("ndjson.gz", "process_metadata", {}, events)

    objects = {"client_a": [body("client_a", 1), body("client_a", 2)], "client_b": [body("client_b", 3)]}
    assert commit(target, key, "ndjson.gz", {"client_a": objects["client_a"]}, None).rows == 2
    assert commit(target, key, "ndjson.gz", objects, None).rows == 1  # only client_b, the retried one
    again = commit(target, key, "ndjson.gz", objects, None)

    assert (again.rows, again.skipped) == (0, ["client_a", "client_b"])
    assert marked(target) == [(key, "client_a"), (key, "client_b")]
    rows = scanned(target)
    assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]
    assert rows.column("event_data").to_pylist()[0].startswith("{")  # JSON text, as in the parquet objects


def test_a_column_added_to_the_schema_is_added_to_an_existing_table(
    catalog_uri: str, table_name: str, tmp_path: Path
) -> None:
    """A table created before a column existed (here: without `extra`) gains it on the next commit, its old rows
    reading it as null, so a column added to pipeline.parquet.COLUMNS flows into the table."""
    target = IcebergTarget(catalog_uri, (tmp_path / "lake").as_uri(), table_name)
    older = SCHEMA.remove(SCHEMA.get_field_index("extra"))
    with SqlCatalog(CATALOG_NAME, uri=catalog_uri, warehouse=target.warehouse) as catalog:
        catalog.create_namespace_if_not_exists(table_name.split(".")[0])
        catalog.create_table(table_name, schema=older).append(pa.Table.from_pylist([{"id": 1}], schema=older))
    event = {"id": 2, "event_id": str(uuid.uuid4()), "client_id": "client_a", "extra": {"plan": "pro"}}

    commit(target, "raw-events/k.json", "json", {"client_a": [encode("json", "process_metadata", {}, [event])]}, None)

    rows = sorted(scanned(target).select(["id", "extra"]).to_pylist(), key=lambda row: row["id"])
    assert rows == [{"id": 1, "extra": None}, {"id": 2, "extra": '{"plan":"pro"}'}]


async def test_a_pipeline_role_configured_with_a_catalog_fills_the_table_from_collect(
    running_admin: MakeApp, db: asyncpg.Connection, catalog_uri: str, table_name: str, tmp_path: Path
) -> None:
    """Settings to table: events sent to /collect, exported and processed by the app's own pipeline (ROLE=all, local
    stores), are in the Iceberg table the ICEBERG_* settings name, once each."""
    lake = tmp_path / "lake"
    app = await running_admin(iceberg_catalog_uri=catalog_uri, iceberg_warehouse=str(lake), iceberg_table=table_name)
    for n in range(5):
        answer = await app.post({"eventType": "iceberg", "siteId": "acme.com", "eventData": {"n": n}})
        assert answer.status_code == 200, answer.text
    await app.services.buffer.drain()
    await wait_for_rows(db, 5)
    assert (await app.client.post("/export/run")).status_code == 200
    processed = await app.client.post("/process/run")
    assert processed.status_code == 200, processed.text

    rows = scanned(IcebergTarget(catalog_uri, lake.as_uri(), table_name))
    assert sorted(rows.column("event_type").to_pylist()) == ["iceberg"] * 5
    assert len(set(rows.column("event_id").to_pylist())) == 5


def test_settings_refuse_an_iceberg_catalog_without_a_warehouse_or_with_a_postgres_scheme() -> None:
    """ICEBERG_CATALOG_URI needs ICEBERG_WAREHOUSE, a SQLAlchemy postgresql:// URI and a namespace.table name."""
    base = {"ICEBERG_CATALOG_URI": "postgresql://u:p@127.0.0.1/db"}
    with pytest.raises(SettingsError, match="ICEBERG_WAREHOUSE"):
        Settings.from_env(base)
    with pytest.raises(SettingsError, match="ICEBERG_CATALOG_URI"):
        Settings.from_env({**base, "ICEBERG_CATALOG_URI": "postgres://u:p@h/db", "ICEBERG_WAREHOUSE": "/lake"})
    with pytest.raises(SettingsError, match="ICEBERG_TABLE"):
        Settings.from_env({**base, "ICEBERG_WAREHOUSE": "s3://b/lake", "ICEBERG_TABLE": "events"})
    settings = Settings.from_env({**base, "ICEBERG_WAREHOUSE": "s3://b/lake"})
    assert "p@" not in repr(settings)  # the catalog's password stays out of logs


def test_pyiceberg_is_imported_only_in_the_worker_process() -> None:
    """A pipeline process with a catalog configured loads neither pyiceberg nor SQLAlchemy itself: the commit
    imports them in the worker process."""
    script = (
        "import sys\n"
        "import collector.app, pipeline.scheduler, pipeline.process, pipeline.iceberg\n"
        "from pipeline.iceberg import IcebergTable\nfrom pipeline.iceberg_target import IcebergTarget\n"
        "IcebergTable(IcebergTarget('postgresql://u@h/d', 'file:///lake', 'a.b'))\n"
        "loaded = [m for m in ('pyiceberg', 'sqlalchemy', 'pyarrow') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(900)
@pytest.mark.skipif(os.environ.get("PIPELINE_BENCH") != "1", reason="long variant: PIPELINE_BENCH=1")
@pytest.mark.parametrize("fmt", ["parquet", "ndjson.gz"])
async def test_processing_throughput_with_and_without_the_iceberg_commit(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_processor: MakeProcessor, catalog_uri: str,
    table_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, fmt: str,
) -> None:  # fmt: skip
    """A backlog (two clients) processed to `fmt` without, then again with, the table; the time per commit and
    rows/s printed, never asserted."""
    rows = int(os.environ.get("PIPELINE_BENCH_ROWS", "100000"))
    for start in range(0, rows, 20_000):
        half = min(20_000, rows - start) // 2
        await insert_events(db, half, data={"button": "buy", "n": 3}, ip="198.51.100.7", url="https://acme.com/p?q=1")
        await insert_events(db, min(20_000, rows - start) - half, client_id="client_eu_shop", site_id="eu-shop.com",
                            data={"button": "buy"}, ip="198.51.100.8")  # fmt: skip
    raw = LocalStore(tmp_path / "raw")
    await Exporter(raw, fmt="parquet", batch_size=10_000).run(conn)
    await offload.run(len, b"")  # the worker process started before timing, as in a running pipeline
    figures = []
    for table in (None, IcebergTable(IcebergTarget(catalog_uri, (tmp_path / "lake").as_uri(), table_name))):
        processor = await make_processor(raw, LocalStore(tmp_path / f"processed-{table is None}"), fmt=fmt)
        processor.table = table
        await conn.execute("UPDATE raw_objects SET processed_at = NULL")
        await conn.execute("TRUNCATE processed_event_ids, processed_objects")
        caplog.clear()
        started, done = time.perf_counter(), 0
        with caplog.at_level("INFO", logger="pipeline.iceberg"):
            while (result := await processor.run(conn)).raw_objects:
                done += result.rows
        seconds = time.perf_counter() - started
        commits = [float(m.group(1)) for r in caplog.records if (m := COMMIT_TIME.search(r.getMessage()))]
        per_commit = f", {len(commits)} commits, {sum(commits) / len(commits):.3f} s each" if commits else ""
        figures.append(f"{fmt}, {'with' if table else 'without'} Iceberg: {done} rows in {seconds:.2f} s = "
                       f"{done / seconds:,.0f} rows/s{per_commit}")  # fmt: skip
    print("\n" + "\n".join(figures))
