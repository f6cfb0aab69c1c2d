"""Two collector processes on one database and one bucket: ingest on both, one killed, export exactly once."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from itertools import pairwise
from pathlib import Path

import asyncpg

from pipeline.formats import decode_events, format_of
from tests.harness import Ledger, collector_process, loading, wait_until_live
from tests.pipeline.conftest import MakeStore, create_bucket, keys_of

KEY_RANGE = re.compile(r"_(\d+)-(\d+)\.json$")


async def test_two_instances_export_every_acknowledged_event_once_after_one_is_killed(
    database_url: str, db: asyncpg.Connection, moto_url: str, make_store: MakeStore, tmp_path: Path
) -> None:
    """Load on both instances, SIGKILL one mid-run: the other takes over the export lock, and the raw bucket holds
    every acknowledged event exactly once, in objects whose id ranges never overlap."""
    raw_bucket, processed_bucket = f"raw-{uuid.uuid4().hex[:10]}", f"proc-{uuid.uuid4().hex[:10]}"
    await create_bucket(moto_url, raw_bucket)
    await create_bucket(moto_url, processed_bucket)
    env = {
        "ACK_MODE": "durable", "EXPORT_INTERVAL_S": "0.5", "PROCESS_INTERVAL_S": "0.5", "EXPORT_BATCH_SIZE": "500",
        "RAW_S3_BUCKET": raw_bucket, "PROCESSED_S3_BUCKET": processed_bucket, "S3_ENDPOINT_URL": moto_url,
        "RAW_S3_ACCESS_KEY": "testing", "RAW_S3_SECRET_KEY": "testing", "RAW_S3_REGION": "us-east-1",
        "PROCESSED_S3_ACCESS_KEY": "testing", "PROCESSED_S3_SECRET_KEY": "testing", "PROCESSED_S3_REGION": "us-east-1",
    }  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ledger = Ledger()
    with (
        collector_process(database_url, tmp_path / "a", **env) as (proc_a, url_a),
        collector_process(database_url, tmp_path / "b", **env) as (proc_b, url_b),
    ):
        await wait_until_live(proc_a, url_a)
        await wait_until_live(proc_b, url_b)
        async with (
            loading(ledger, url_a, connections=3, request_timeout_s=5),
            loading(ledger, url_b, connections=3, request_timeout_s=5),
        ):
            await asyncio.sleep(3.0)
            proc_a.send_signal(signal.SIGKILL)  # whichever of the two leads a stage right now
            proc_a.wait()
            await asyncio.sleep(2.0)
        # The survivor exports every half second: wait until the watermark covers every stored row.
        async with asyncio.timeout(40):
            while True:
                newest = await db.fetchval("SELECT max(id) FROM events_log")
                state = await db.fetchrow(
                    "SELECT watermark, (SELECT count(*) FROM raw_objects WHERE exported_at IS NULL) AS claims"
                    " FROM export_state"
                )
                if newest is not None and state["watermark"] >= newest and state["claims"] == 0:
                    break
                await asyncio.sleep(0.2)
        assert proc_b.poll() is None
    assert len(ledger.acked) > 200, ledger.answers

    store = await make_store(raw_bucket)
    keys = await keys_of(store, "raw-events/")
    exported: list[uuid.UUID] = []
    ranges = []
    for key in keys:
        events = decode_events(format_of(key), await store.get(key))
        exported += [uuid.UUID(e["event_id"]) for e in events if e["event_type"] == "load"]
        match = KEY_RANGE.search(key)
        assert match is not None, key
        ranges.append((int(match[1]), int(match[2])))
    assert len(exported) == len(set(exported)), "an event was exported twice"
    assert ledger.acked <= set(exported), f"{len(ledger.acked - set(exported))} acknowledged events not exported"
    ranges.sort()
    assert all(prev[1] < nxt[0] for prev, nxt in pairwise(ranges)), ranges
    manifest = await db.fetch("SELECT key FROM raw_objects ORDER BY range_start")
    assert sorted(r["key"] for r in manifest) == keys
