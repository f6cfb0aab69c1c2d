"""Object writers hold about the bytes of the events they were given, not the buffers orjson handed them."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable

import orjson
import pytest

from pipeline.formats import JsonWriter, ParquetWriter

EVENT = {"event_type": "pageview", "url": "https://acme.com/p/1", "event_data": {"title": "x" * 400}}


@pytest.mark.parametrize("make", [lambda: JsonWriter("json", "export_metadata"), lambda: ParquetWriter("export")])
def test_a_writer_holds_about_the_size_of_its_events(make: Callable[[], JsonWriter | ParquetWriter]) -> None:
    """2,000 events of ~460 bytes cost the writer under 3x their bytes (orjson's 4 KiB buffers held were ~9x)."""
    writer = make()
    payload = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            event = orjson.dumps(EVENT)
            payload += len(event)
            writer.add(event)
            del event
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert writer.count == 2000
    assert held < 3 * payload, (held, payload)


def test_the_worker_gives_pyarrow_the_c_allocator() -> None:
    """Importing pipeline.arrow (what the worker process does) makes pyarrow use the C allocator: the default
    (mimalloc) kept each object's table (204 against 146 MB on a 1,000,000-row parquet backlog)."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    probe = subprocess.run(
        [sys.executable, "-c", "import pipeline.arrow, pyarrow; print(pyarrow.default_memory_pool().backend_name)"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip
    assert probe.stdout.strip() == "system"
