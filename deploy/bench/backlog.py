"""How long a ROLE=pipeline process takes to clear a backlog, and the peak memory of its processes.

    .venv/bin/python deploy/bench/backlog.py POSTGRES_DSN [ROWS] [EXPORT_FORMAT] [PROCESSED_FORMAT]

POSTGRES_DSN must allow CREATE DATABASE (a fresh database per run, left behind for inspection). ROWS (default
1,000,000) pageviews are inserted in one go, then `python -m collector` with ROLE=pipeline, WORKERS=1, both stages
every second and the local object store (DATA_DIR in a temporary folder) exports and processes them. Prints the
seconds and rows/s of each stage and the peak RSS of the collector and its processing worker (sampled every 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[2]
PORT = 8131


def rss_by_process(root: int, peaks: dict[str, int]) -> int:
    """The RSS (kB) of `root` and its children now; each one's peak kept in `peaks` by command line."""
    children = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in [root, *map(int, children)]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:60]
        except OSError:
            continue
        kb = int(status.split("VmRSS:")[1].split()[0])
        peaks[command] = max(peaks.get(command, 0), kb)
        total += kb
    return total


async def wait_live(port: int = PORT) -> None:
    """Until the collector on `port` answers /livez (a minute at most)."""
    async with httpx.AsyncClient() as client:
        for _ in range(240):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/livez")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise SystemExit(f"nothing answers on port {port}")


async def insert_backlog(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` pageviews of one client (`localhost`, which the development directory authorizes), 100,000 a query."""
    for first in range(0, rows, 100_000):
        await conn.execute(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, event_timestamp, received_at,"
            " event_data, user_agent, url, session_id, visitor_id)"
            " SELECT gen_random_uuid(), 'pageview', 'localhost', 'client_localhost', now(), now(),"
            " jsonb_build_object('n', g, 'title', 'Page ' || g), 'Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0',"
            " 'https://localhost/p/' || g, 's' || (g % 1000), 'v' || (g % 5000)"
            " FROM generate_series($1::int, $2::int) g",
            first, min(rows, first + 100_000) - 1,
        )  # fmt: skip


async def main(dsn: str, rows: int, export_format: str, processed_format: str) -> None:
    name = f"backlog_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = dsn.replace("/postgres?", f"/{name}?") if "/postgres?" in dsn else dsn.rsplit("/", 1)[0] + f"/{name}"
    env = {k: v for k, v in os.environ.items() if k != "PIXEL_MANAGEMENT_URL"}
    env.update(
        DATABASE_URL=url, ROLE="pipeline", WORKERS="1", PORT=str(PORT), DATA_DIR=tempfile.mkdtemp(prefix="backlog-"),
        EXPORT_INTERVAL_S="1", PROCESS_INTERVAL_S="1", EXPORT_FORMAT=export_format, PROCESSED_FORMAT=processed_format,
        LOG_LEVEL="WARNING",
    )  # fmt: skip
    command = [sys.executable, "-m", "collector"]
    migrate = subprocess.Popen(command, cwd=REPO, env=env)  # noqa: ASYNC220 -- its start migrates the database
    await wait_live()
    migrate.send_signal(2)
    migrate.wait()
    conn = await asyncpg.connect(url)
    started = time.monotonic()
    await insert_backlog(conn, rows)
    print(f"inserted {rows} rows in {time.monotonic() - started:.1f} s", flush=True)
    pipeline = subprocess.Popen(command, cwd=REPO, env=env)  # noqa: ASYNC220 -- a bench driver
    started, peak, exported_s, peaks = time.monotonic(), 0, None, {}
    try:
        while True:
            peak = max(peak, rss_by_process(pipeline.pid, peaks))
            if exported_s is None and await conn.fetchval(
                "SELECT count(*) = 0 FROM events_log WHERE id > (SELECT watermark FROM export_state)"
            ):
                exported_s = time.monotonic() - started
            if exported_s is not None and not await conn.fetchval(
                "SELECT count(*) FROM raw_objects WHERE processed_at IS NULL"
            ):
                break
            await asyncio.sleep(0.2)
        total_s = time.monotonic() - started
    finally:
        pipeline.send_signal(2)
        pipeline.wait()
        await conn.close()
    print(
        f"rows={rows} export_format={export_format} processed_format={processed_format} export_s={exported_s:.1f}"
        f" ({rows / exported_s:,.0f} rows/s) processing_s={total_s - exported_s:.1f}"
        f" ({rows / (total_s - exported_s):,.0f} rows/s) total_s={total_s:.1f} peak_rss_mb={peak / 1024:.0f}"
    )
    for command_line, kb in peaks.items():
        print(f"  peak {kb / 1024:.0f} MB  {command_line}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    given = sys.argv[3:5]
    export_format, processed_format = [*given, *["ndjson.gz", "parquet"][len(given) :]]
    asyncio.run(
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000, export_format, processed_format)
    )
