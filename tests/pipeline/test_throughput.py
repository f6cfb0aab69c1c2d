"""Long variant: export and processing throughput per format on a 100,000-row backlog, printed, never asserted.

Run with `PIPELINE_BENCH=1 python -m pytest -s tests/pipeline/test_throughput.py`. Objects go to directory stores,
so the figures are the pipeline's own work (PostgreSQL reads, encoding, redaction, the worker process) without
moto's S3 server competing for this process's GIL; docs/pipeline.md#throughput records them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg
import pytest

from pipeline import offload
from pipeline.export import Exporter
from pipeline.formats import FORMATS
from pipeline.objects import LocalStore
from tests.pipeline.conftest import MakeProcessor, insert_events

BACKLOG = int(os.environ.get("PIPELINE_BENCH_ROWS", "100000"))
DATA = {"button": "add_to_cart", "product": {"sku": "SKU-12345", "price": 42.5, "tags": ["sale", "new"]}, "n": 3}
AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

pytestmark = pytest.mark.skipif(os.environ.get("PIPELINE_BENCH") != "1", reason="long variant: PIPELINE_BENCH=1")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_export_and_processing_throughput_per_format(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_processor: MakeProcessor, tmp_path: Path, fmt: str
) -> None:
    """A 100k-row backlog (two clients, standard and gdpr) is exported and processed in `fmt`; rows/s printed."""
    for start in range(0, BACKLOG, 20_000):
        half = min(20_000, BACKLOG - start) // 2
        await insert_events(db, half, data=DATA, ip="198.51.100.7", user_agent=AGENT, url="https://acme.com/p?q=1")
        await insert_events(db, min(20_000, BACKLOG - start) - half, client_id="client_eu_shop", site_id="eu-shop.com",
                            data=DATA, ip="198.51.100.8", user_agent=AGENT, url="https://eu-shop.com/p")  # fmt: skip
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    processor = await make_processor(raw, processed, fmt=fmt)
    await offload.run(len, b"")  # the worker process started before timing: a running pipeline has it already

    started = time.perf_counter()
    exported = await Exporter(raw, fmt=fmt, batch_size=10_000).run(conn)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = 0
    while (result := await processor.run(conn)).raw_objects:
        rows += result.rows
    process_s = time.perf_counter() - started

    raw_bytes = sum(p.stat().st_size for p in (tmp_path / "raw").rglob("*") if p.is_file())
    out_bytes = sum(p.stat().st_size for p in (tmp_path / "processed").rglob("*") if p.is_file())
    print(
        f"\n{fmt}: export {exported.rows} rows in {export_s:.2f} s = {exported.rows / export_s:,.0f} rows/s"
        f" ({exported.objects} objects, {raw_bytes / 1e6:.1f} MB);"
        f" processing {rows} rows in {process_s:.2f} s = {rows / process_s:,.0f} rows/s ({out_bytes / 1e6:.1f} MB)"
    )
    assert exported.rows == BACKLOG and rows == BACKLOG
