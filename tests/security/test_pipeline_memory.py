"""Issue 11 item 4 (pipeline half): export and processing hold a bounded amount of memory whatever the backlog."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import tracemalloc
from pathlib import Path

import asyncpg
import pytest

from collector.ingest.auth import PixelManagementDirectory
from pipeline.clients import ClientSettingsSource
from pipeline.export import Exporter
from pipeline.objects import LocalStore, ObjectStore
from pipeline.process import Processor
from tests.pipeline.conftest import insert_events, keys_of, read_events
from tests.pixel_management import PixelManagement
from tests.security.conftest import figure, long_only, scale

MiB = 1024 * 1024
# An amplified row as a 62 KB batch made them before ingest capped inherited fields: ~40 KB of eventData and URL.
# Words, not one long run: this measures memory, not the privacy patterns' time on a pathological string (item 3).
BIG_DATA = {f"field_{i}": "lorem ipsum dolor sit amet " * 15 for i in range(90)}
BIG_URL = "https://acme.com/landing?" + "&".join(f"utm_{i}=v{i}" for i in range(400))


async def insert_backlog(db: asyncpg.Connection, rows: int) -> None:
    """`rows` amplified rows, half acme's and half eu-shop's, inserted the way CopyWriter does."""
    for start in range(0, rows, 500):
        n = min(500, rows - start)
        await insert_events(db, n // 2, data=BIG_DATA, url=BIG_URL, ip="198.51.100.7")
        await insert_events(db, n - n // 2, client_id="client_eu_shop", site_id="eu-shop.com", data=BIG_DATA,
                            url=BIG_URL, ip="198.51.100.8")  # fmt: skip


async def backlog_bytes(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT sum(octet_length(event_data::text) + octet_length(url)) FROM events_log"))


async def test_export_and_processing_peak_is_bounded_by_the_object_size_not_the_backlog(
    db: asyncpg.Connection, conn: asyncpg.Connection, pixel: PixelManagement, tmp_path: Path
) -> None:
    """A 39 MiB backlog goes through export and processing in 1 MiB objects with a Python heap peak under 20 MiB."""
    await insert_backlog(db, 1000)
    backlog = await backlog_bytes(db)
    assert backlog > 38 * MiB
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    directory = PixelManagementDirectory(pixel.url, timeout_s=2.0)

    async def no_own_buckets(bucket: str) -> ObjectStore:
        raise AssertionError(bucket)

    processor = Processor(raw, ClientSettingsSource(directory, processed, no_own_buckets), ip_hash_secret="m" * 32)
    exporter = Exporter(raw, fmt="json", batch_size=10_000, max_object_bytes=MiB)
    try:
        tracemalloc.start()
        exported = await exporter.run(conn)
        export_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        processed_run = await processor.run(conn)
        peak = max(export_peak, tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
        await directory.close()

    figure("pipeline_tracemalloc_peak_mb", round(peak / MiB, 1))
    assert exported.rows == 1000 and processed_run.rows == 1000 and processed_run.failed == []
    sizes = [r["bytes"] for r in await db.fetch("SELECT bytes FROM raw_objects")]
    assert len(sizes) > 30 and max(sizes) <= MiB + 64 * 1024  # one row past the bound at most
    assert peak < 20 * MiB, f"peak {peak / MiB:.1f} MiB for a {backlog / MiB:.0f} MiB backlog"
    sample = (await keys_of(processed))[0]
    assert len(await read_events(processed, sample)) > 0


_WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    import asyncpg
    from collector.ingest.auth import PixelManagementDirectory
    from pipeline.clients import ClientSettingsSource
    from pipeline.export import Exporter
    from pipeline.objects import LocalStore
    from pipeline import offload
    from pipeline.process import Processor

    async def main(dsn, pixel_url, root, fmt):
        conn = await asyncpg.connect(dsn)
        directory = PixelManagementDirectory(pixel_url, timeout_s=5.0)
        raw, processed = LocalStore(Path(root) / "raw"), LocalStore(Path(root) / "processed")
        async def no_own(bucket):
            raise AssertionError(bucket)
        processor = Processor(raw, ClientSettingsSource(directory, processed, no_own), ip_hash_secret="m" * 32)
        exported = await Exporter(raw, fmt=fmt, batch_size=10_000).run(conn)
        done = await processor.run(conn)
        while done.raw_objects:
            done = await processor.run(conn)
        await directory.close()
        await conn.close()
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
        # Processing decodes, redacts and encodes in its own worker process (pipeline.offload): measure it too.
        helper = await offload.run(os.getpid)
        helper_hwm = next(l for l in open(f"/proc/{helper}/status") if l.startswith("VmHWM")).split()[1]
        print(json.dumps({"rows": exported.rows, "objects": exported.objects, "peak_rss_kib": int(hwm),
                          "offload_peak_rss_kib": int(helper_hwm)}))

    asyncio.run(main(*sys.argv[1:]))
    """
)


@long_only
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt", ["json", "ndjson.gz"])
async def test_a_large_backlog_is_exported_and_processed_in_under_300_mb(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    database_url: str,
    pixel: PixelManagement,
    tmp_path: Path,
    fmt: str,
) -> None:
    """A worker process exporting and processing a ~600 MB backlog of amplified rows peaks under 300 MB RSS."""
    rows = scale(1000, 15_000)
    await insert_backlog(db, rows)
    backlog = await backlog_bytes(db)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WORKER, database_url, pixel.url, str(tmp_path), fmt,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await worker.communicate()
    assert worker.returncode == 0, err.decode()[-2000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    peak_mb, offload_mb = report["peak_rss_kib"] / 1024, report["offload_peak_rss_kib"] / 1024
    figure(f"pipeline_peak_rss_mb[{fmt}, backlog {backlog / MiB:.0f} MB, {report['objects']} raw objects]",
           f"{peak_mb:.1f} (its processing worker process: {offload_mb:.1f})")  # fmt: skip
    assert report["rows"] == rows
    assert peak_mb <= 300 and offload_mb <= 300
