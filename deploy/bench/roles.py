"""Does the pipeline take /collect throughput from ingest? The same load three ways, interleaved, on a 2-core box:

    .venv/bin/python deploy/bench/roles.py POSTGRES_DSN [ROWS] [DURATION_S] [ROUNDS]

- `ingest-idle`: ROLE=ingest on CPU 0, no backlog (the reference);
- `all`: ROLE=all on CPU 0 while its own pipeline exports and processes a ROWS backlog (its worker process too);
- `split`: ROLE=ingest on CPU 0 and a ROLE=pipeline process on CPU 1 clearing the same backlog;
- `split-idle`: the same with the pipeline under SCHED_IDLE (`chrt --idle 0`): it takes CPU 1 only when wrk and
  PostgreSQL leave it free, as a pipeline sharing a small machine with ingest should.

wrk (-t1 -c32, one small event per POST) runs on CPU 1 for DURATION_S; PostgreSQL is not pinned. Each cell gets a
fresh database (CREATE DATABASE: POSTGRES_DSN must allow it) with the backlog inserted before the servers start.
Prints, per cell and round, requests/s, the ingest process's own CPU use over the window and its requests per
CPU-second (what a worker does with the CPU it gets: a pipeline working inside it lowers this figure, one beside it
does not), then the medians with their ratio to `ingest-idle`. Needs wrk, taskset and chrt.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
from backlog import insert_backlog, wait_live  # beside this file: run it as a script

REPO = Path(__file__).resolve().parents[2]
LUA = Path(__file__).resolve().parent / "post_one.lua"
INGEST_PORT, PIPELINE_PORT = 8142, 8143


def environment(url: str, role: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PIXEL_MANAGEMENT_URL"}
    env.update(
        DATABASE_URL=url, ROLE=role, WORKERS="1", PORT=str(port), DATA_DIR=tempfile.mkdtemp(prefix="roles-"),
        EXPORT_INTERVAL_S="1", PROCESS_INTERVAL_S="1", EXPORT_FORMAT="ndjson.gz", PROCESSED_FORMAT="parquet",
        LOG_LEVEL="WARNING",
    )  # fmt: skip
    return env


def start(url: str, role: str, port: int, cpu: str, idle: bool = False) -> subprocess.Popen[bytes]:
    command = [*(["chrt", "--idle", "0"] if idle else []), "taskset", "-c", cpu, sys.executable, "-m", "collector"]
    env = environment(url, role, port)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.send_signal(2)
    for process in processes:
        process.wait()


async def fresh_database(dsn: str, rows: int) -> tuple[str, asyncpg.Connection]:
    name = f"roles_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = dsn.replace("/postgres?", f"/{name}?") if "/postgres?" in dsn else dsn.rsplit("/", 1)[0] + f"/{name}"
    migrating = start(url, "ingest", INGEST_PORT, "0-1")  # its start migrates the new database
    await wait_live(INGEST_PORT)
    stop(migrating)
    conn = await asyncpg.connect(url)
    await insert_backlog(conn, rows)
    await conn.execute("VACUUM ANALYZE events_log")
    return url, conn


def wrk(duration_s: int) -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration_s}s", "-s", str(LUA),
         f"http://127.0.0.1:{INGEST_PORT}/collect"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(rate.group(1)), int(failed.group(1)) if failed else 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads, not its children) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cell(dsn: str, rows: int, duration_s: int, mode: str) -> tuple[float, int, int, float]:
    """One cell: (requests/s, non-2xx answers, export watermark after, ingest process CPU-seconds in the window)."""
    url, conn = await fresh_database(dsn, 0 if mode == "ingest-idle" else rows)
    ingest = start(url, "all" if mode == "all" else "ingest", INGEST_PORT, "0")
    processes = [ingest]
    try:
        if mode.startswith("split"):
            processes.append(start(url, "pipeline", PIPELINE_PORT, "1", idle=mode == "split-idle"))
            await wait_live(PIPELINE_PORT)
        await wait_live(INGEST_PORT)
        await asyncio.sleep(2)  # the pipeline is at work on the backlog
        before = cpu_seconds(ingest.pid)
        rate, failed = wrk(duration_s)
        used = cpu_seconds(ingest.pid) - before
        exported = int(await conn.fetchval("SELECT watermark FROM export_state"))
        return rate, failed, exported, used
    finally:
        stop(*processes)
        await conn.close()


async def main(dsn: str, rows: int, duration_s: int, rounds: int) -> None:
    rates: dict[str, list[float]] = {}
    efficiency: dict[str, list[float]] = {}
    for number in range(rounds):
        for mode in ("ingest-idle", "all", "split", "split-idle"):
            rate, failed, exported, used = await cell(dsn, rows, duration_s, mode)
            per_cpu_s = rate * duration_s / used if used else 0.0
            rates.setdefault(mode, []).append(rate)
            efficiency.setdefault(mode, []).append(per_cpu_s)
            print(
                f"round {number} {mode:12s} {rate:9.0f} req/s  ingest CPU {100 * used / duration_s:4.0f} %"
                f"  {per_cpu_s:9.0f} req per ingest CPU-s  non-2xx {failed}  watermark {exported}",
                flush=True,
            )
    reference = statistics.median(rates["ingest-idle"])
    reference_cpu = statistics.median(efficiency["ingest-idle"])
    for mode, values in rates.items():
        median, per_cpu = statistics.median(values), statistics.median(efficiency[mode])
        print(
            f"median {mode:12s} {median:9.0f} req/s  ratio {median / reference:.2f}"
            f"   {per_cpu:9.0f} req per ingest CPU-s  ratio {per_cpu / reference_cpu:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    numbers = [int(a) for a in sys.argv[2:5]]
    rows, duration_s, rounds = [*numbers, *[300_000, 10, 3][len(numbers) :]]
    asyncio.run(main(sys.argv[1], rows, duration_s, rounds))
