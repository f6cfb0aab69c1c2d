"""`make bench`: load the collector with wrk, cell by cell, and check that every acknowledged event was stored.

Each cell starts a fresh server (the collector, or the bare Starlette app as the ceiling) pinned with taskset, runs
wrk with collect.lua against POST /collect for BENCH_DURATION, stops the server with SIGTERM and, for the collector,
compares the events wrk saw acknowledged (2xx answers x events per request) with the rows in events_log. Any
difference fails the run (exit status 1). The table (requests/s, events/s, p50/p99, server CPU and peak RSS, acked,
stored, non-2xx) and the ratios against the ceiling are printed, and written as Markdown to BENCH_OUTPUT if set.

Environment: BENCH_DURATION (10s), BENCH_SCENARIOS (comma-separated names, default all), BENCH_RUNS (1; with more,
the median per cell is printed too), BENCH_OUTPUT (Markdown file), BENCH_RATE (requests/s offered per cell, paced
by collect.lua; unset: as fast as the server answers, as the ratios are measured), BENCH_DATABASE_URL or
DATABASE_URL (an external PostgreSQL, e.g. the system's with stock settings; else one embedded PostgreSQL for the
whole run). Other collector
settings in the environment (FLUSH_MAX_EVENTS, FLUSH_CONCURRENCY, ...) reach the collector unchanged.

Besides throughput and latency (p50/p99/p99.9), each collector cell reports what few publish: CPU-seconds per
million stored events of the collector and of PostgreSQL (every local process named postgres, over the window),
and bytes of WAL PostgreSQL wrote per event (pg_current_wal_lsn before and after the window).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK_DIR = REPO / ".data" / "bench"  # embedded PostgreSQL, payloads and server logs (.data/ is git-ignored)
LUA_SCRIPT = HERE / "collect.lua"
BARE_APP = HERE / "bare_app.py"

WRK_THREADS = 2
# wrk's -d runs this much longer than the measured window, so the answers to the requests in flight when the
# window closes still arrive (see collect.lua) and acked == stored can be exact.
WRK_TAIL_S = 2
# wrk keeps a latency histogram of one slot per microsecond up to its timeout: 5 s is 40 MB, and no answer here
# should take that long.
WRK_TIMEOUT = "5s"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
SETTLE_S = 2.0  # after /livez, before measuring idle RSS and loading
# Before each cell, wait (at most QUIET_MAX_WAIT_S) until CPUs 0 and 1 are this idle over a second: the previous
# cell's aftermath (PostgreSQL writing back half a million rows, the kernel flushing dirty pages) otherwise runs in
# the next cell's window and shows as a slower ceiling or a slower collector, whichever comes next.
QUIET_IDLE = 0.90
QUIET_MAX_WAIT_S = 30.0
SAMPLE_INTERVAL_S = 0.2
BATCH_SIZE = 20  # the batch of the main cells; the batch100 cells send 100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KB_PER_MB = 1024.0  # /proc reports kB

# What the ratios are held to: printed as PASS/MISS, never a failure.
TARGET_SINGLE = 0.85
TARGET_BATCH = 0.50
TARGET_DURABLE = 0.80
TARGET_P99_C8_MS = 10.0
TARGET_IDLE_RSS_MB = 200.0
TARGET_STALLED_RSS_MB = 300.0
# A front door's events/s against /collect's for the same events (issue 18: a per-event cost within 15 %).
TARGET_DOOR = 1 / 1.15


class BenchError(Exception):
    """A cell could not be measured (server did not start, wrk failed, ...)."""


# --- scenarios -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    bare: bool = False  # the bare Starlette app instead of the collector
    batch: bool = False  # BATCH_SIZE (or `batch_size`) events per request instead of 1
    batch_size: int = BATCH_SIZE
    ack_mode: str = "buffered"
    workers: int = 1
    connections: int = 64
    stalled: bool = False  # events_log locked during the load
    door: str = ""  # a front door's cell (segment, snowplow, plausible: docs/protocols.md) instead of /collect
    same_rows: str = ""  # a /collect cell whose body stores that door cell's rows (same_rows_payloads)

    @property
    def events_per_request(self) -> int:
        return self.batch_size if self.batch else 1

    @property
    def payload(self) -> str:
        """The key of its body in Bench.payload_files."""
        if self.same_rows:
            return f"collect-as-{self.same_rows}-{self.events_per_request}"
        return f"{self.door or 'collect'}-{self.events_per_request}"

    @property
    def path(self) -> str:
        return DOOR_PATHS[self.door]

    @property
    def server_cpus(self) -> str:
        # One core each for server and wrk; two workers need both cores, so then both share both.
        return "0,1" if self.workers > 1 else "0"

    @property
    def wrk_cpus(self) -> str:
        return "0,1" if self.workers > 1 else "1"


SCENARIOS = [
    Scenario("bare-single", bare=True),
    Scenario("bare-batch20", bare=True, batch=True),
    Scenario("single-buffered"),
    Scenario("batch20-buffered", batch=True),
    Scenario("single-durable", ack_mode="durable"),
    Scenario("batch20-durable", batch=True, ack_mode="durable"),
    Scenario("single-buffered-w2", workers=2),
    Scenario("batch20-buffered-w2", batch=True, workers=2),
    Scenario("single-durable-w2", ack_mode="durable", workers=2),
    Scenario("batch20-durable-w2", batch=True, ack_mode="durable", workers=2),
    Scenario("bare-batch100", bare=True, batch=True, batch_size=100),
    Scenario("batch100-buffered", batch=True, batch_size=100),
    Scenario("batch100-durable", batch=True, batch_size=100, ack_mode="durable"),
    Scenario("segment-batch20", batch=True, door="segment"),
    Scenario("collect-segment-rows20", batch=True, same_rows="segment"),
    Scenario("snowplow-batch20", batch=True, door="snowplow"),
    Scenario("collect-snowplow-rows20", batch=True, same_rows="snowplow"),
    Scenario("plausible-single", door="plausible"),
    Scenario("collect-plausible-rows", same_rows="plausible"),
    Scenario("latency-c8", connections=8),
    Scenario("stalled-storage", batch=True, stalled=True),
]


# The front doors' cells (issue 18): the same events as batch20 / single, in each protocol's own shape, without
# message ids (the collector makes them, as for /collect's cells: repeated ids would be deduplicated). Segment's
# write key authorizes "localhost" through the domains file the bench writes (DOMAINS_FILE).
WRITE_KEY = "wkBenchWriteKey01"
DOOR_PATHS = {
    "": "/collect", "segment": "/v1/batch", "snowplow": "/com.snowplowanalytics.snowplow/tp2",
    "plausible": "/api/event",
}  # fmt: skip
DOOR_HEADERS = {"segment": "Authorization: Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
PAGE = "https://localhost/products/42"


def door_payloads() -> dict[str, dict[str, object]]:
    kinds = [("click", "element"), ("scroll", "depth"), ("form_focus", "field")]
    segment = {
        "batch": [
            {"type": "track", "event": kinds[i % 3][0], "anonymousId": "vis_xyz789",
             "properties": {kinds[i % 3][1]: f"v{i}"}, "context": {"page": {"url": PAGE, "path": "/products/42"}},
             "timestamp": "2025-07-11T12:00:00.000Z"}
            for i in range(BATCH_SIZE)
        ],
        "sentAt": "2025-07-11T12:00:00.100Z",
    }  # fmt: skip
    snowplow = {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [
            {"e": "se", "aid": "localhost", "url": PAGE, "duid": "vis_xyz789", "se_ca": "ui",
             "se_ac": kinds[i % 3][0], "se_la": f"v{i}", "dtm": "1752235200000", "stm": "1752235200100", "p": "web",
             "tv": "py-1.1.0"}
            for i in range(BATCH_SIZE)
        ],
    }  # fmt: skip
    plausible = {"name": "pageview", "url": PAGE, "domain": "localhost", "referrer": "https://google.com/"}
    return {f"segment-{BATCH_SIZE}": segment, f"snowplow-{BATCH_SIZE}": snowplow, "plausible-1": plausible}


def same_rows_payloads(doors: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """For each door cell, the /collect body that stores the same rows (the same columns: event type, data, visitor,
    url, path, per-event timestamp, context and the rest in `extra`): the door's own mapping of its payload, run once
    here, so that the two cannot drift. A one-event body is sent as a single event, /collect's own way for one."""
    from datetime import UTC, datetime

    from collector.ingest.mapping import plausible, segment, snowplow
    from collector.ingest.mapping.common import Group, group

    def body(groups: list[Group]) -> dict[str, object]:
        [only] = groups
        payload = only.payload()
        if len(only.events) > 1:
            return payload
        [event] = payload.pop("events")
        return {**{k: v for k, v in payload.items() if k != "eventType"}, **event}

    def copy(key: str) -> dict[str, object]:
        value: dict[str, object] = orjson.loads(orjson.dumps(doors[key]))  # the mappings may merge in place
        return value

    received = datetime.now(UTC)
    messages = segment.messages_of(copy(f"segment-{BATCH_SIZE}"), None, BATCH_SIZE)
    events = snowplow.events_of(copy(f"snowplow-{BATCH_SIZE}"), BATCH_SIZE)
    return {
        f"collect-as-segment-{BATCH_SIZE}": body(
            group([(i, segment.map_message(m, received, "localhost")) for i, m in enumerate(messages)])
        ),
        f"collect-as-snowplow-{BATCH_SIZE}": body(
            group([(i, snowplow.map_event(e, received)) for i, e in enumerate(events)])
        ),
        "collect-as-plausible-1": body(group(list(enumerate(plausible.map_event(copy("plausible-1")))))),
    }


def single_payload() -> dict[str, object]:
    return {
        "eventType": "pageview",
        "sessionId": "sess_abc123",
        "visitorId": "vis_xyz789",
        "siteId": "localhost",
        "url": "https://localhost/products/42",
        "referrer": "https://google.com/",
        "eventData": {"title": "Product 42"},
    }


def batch_payload(size: int) -> dict[str, object]:
    kinds: list[tuple[str, Callable[[int], dict[str, object]]]] = [
        ("click", lambda i: {"element": f"button{i}"}),
        ("scroll", lambda i: {"depth": (i * 25) % 100 + 25}),
        ("form_focus", lambda i: {"field": ("email", "name", "phone")[i % 3]}),
    ]
    events = []
    for i in range(size):
        event_type, data = kinds[i % len(kinds)]
        events.append({"eventType": event_type, "eventData": data(i)})
    return {
        "eventType": "batch",
        "sessionId": "sess_abc123",
        "visitorId": "vis_xyz789",
        "siteId": "localhost",
        "url": "https://localhost/products/42",
        "timestamp": "2025-07-11T12:00:00Z",
        "events": events,
    }


# --- configuration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    duration_s: float
    scenarios: list[Scenario]
    runs: int
    output: Path | None
    database_url: str | None
    rate: float = 0.0  # BENCH_RATE: requests/s offered per cell (0: as fast as the server answers)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not match:
        raise SystemExit(f"bench: BENCH_DURATION={text!r} is not a duration like 10s, 500ms or 1m")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    if seconds <= 0:
        raise SystemExit("bench: BENCH_DURATION must be positive")
    return seconds


def load_config(env: dict[str, str]) -> Config:
    names = [name.strip() for name in env.get("BENCH_SCENARIOS", "").split(",") if name.strip()]
    known = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"bench: unknown BENCH_SCENARIOS {unknown}; known: {', '.join(known)}")
    chosen = [scenario for scenario in SCENARIOS if not names or scenario.name in names]
    try:
        runs = int(env.get("BENCH_RUNS", "1"))
    except ValueError:
        raise SystemExit("bench: BENCH_RUNS must be an integer") from None
    if runs < 1:
        raise SystemExit("bench: BENCH_RUNS must be at least 1")
    output = env.get("BENCH_OUTPUT") or None
    return Config(
        duration_s=parse_duration(env.get("BENCH_DURATION", "10s")),
        scenarios=chosen,
        runs=runs,
        output=Path(output) if output else None,
        database_url=env.get("BENCH_DATABASE_URL") or env.get("DATABASE_URL") or None,
        rate=float(env.get("BENCH_RATE", "0") or 0),
    )


# --- /proc sampling ------------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:  # the process exited between listing and reading
        return None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn's workers, multiprocessing helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat is None:
            continue
        # The command name may contain spaces and parentheses: the fields after it start past the last ')'.
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_ticks(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def status_kb(pid: int, key: str) -> int | None:
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


class ServerMonitor:
    """Samples the server's process tree: per-process peak RSS (VmHWM) and CPU time.

    VmHWM is per process and vanishes when the process exits, and the workers exit at SIGTERM, so it is sampled
    all along and the last value seen per pid is kept.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.hwm_kb: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> list[int]:
        pids = process_tree(self.root)
        for pid in pids:
            hwm = status_kb(pid, "VmHWM")
            if hwm is not None:
                self.hwm_kb[pid] = max(hwm, self.hwm_kb.get(pid, 0))
        return pids

    def cpu_snapshot(self) -> dict[int, int]:
        ticks = {pid: cpu_ticks(pid) for pid in process_tree(self.root)}
        return {pid: value for pid, value in ticks.items() if value is not None}

    def rss_mb(self) -> float:
        return sum(status_kb(pid, "VmRSS") or 0 for pid in process_tree(self.root)) / KB_PER_MB

    @property
    def peak_rss_mb(self) -> float:
        return sum(self.hwm_kb.values()) / KB_PER_MB

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


def cpu_idle_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU line of /proc/stat (cpu0, cpu1, ...): (idle + iowait ticks, all ticks)."""
    ticks = {}
    for line in (_read("/proc/stat") or "").splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values]
            ticks[name] = (numbers[3] + numbers[4], sum(numbers))
    return ticks


async def wait_quiet(cpus: tuple[str, ...] = ("cpu0", "cpu1")) -> float:
    """Wait until `cpus` are QUIET_IDLE idle over one second; return the seconds waited (QUIET_MAX_WAIT_S at most)."""
    started = time.monotonic()
    while time.monotonic() - started < QUIET_MAX_WAIT_S:
        before = cpu_idle_ticks()
        await asyncio.sleep(1.0)
        after = cpu_idle_ticks()
        idle = [
            (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1])
            for cpu in cpus
            if cpu in before and cpu in after
        ]
        if all(share >= QUIET_IDLE for share in idle):
            break
    return time.monotonic() - started


def postgres_ticks() -> dict[int, int]:
    """CPU ticks so far of every process on this machine named postgres (the embedded or a local server); empty
    when PostgreSQL runs elsewhere."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (_read(f"/proc/{entry}/comm") or "").strip() == "postgres":
            value = cpu_ticks(int(entry))
            if value is not None:
                ticks[int(entry)] = value
    return ticks


def cpu_percent(before: dict[int, int], after: dict[int, int], wall_s: float) -> float:
    used = sum(ticks - before.get(pid, 0) for pid, ticks in after.items())
    return 100.0 * used / CLOCK_TICKS / wall_s


# --- processes -----------------------------------------------------------------------------------------------------


class Processes:
    """Every process the bench starts, so that an error or Ctrl-C leaves none behind."""

    def __init__(self) -> None:
        self.running: list[asyncio.subprocess.Process] = []

    async def start(self, *argv: str, **kwargs: object) -> asyncio.subprocess.Process:
        # Own session: its group (uvicorn and its workers) can be killed as one, and a Ctrl-C meant for the
        # bench does not reach the server before the bench decides to stop it.
        process = await asyncio.create_subprocess_exec(*argv, start_new_session=True, **kwargs)  # type: ignore[arg-type]
        self.running.append(process)
        return process

    async def stop(self, process: asyncio.subprocess.Process, timeout_s: float) -> int | None:
        """SIGTERM, wait up to timeout_s; None if it had to be killed."""
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            self.kill(process)
            await process.wait()
            return None
        finally:
            self.kill(process)  # leftovers of its group (a worker its parent did not reap)

    @staticmethod
    def kill(process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def cleanup(self) -> None:
        for process in self.running:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            self.kill(process)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


async def wait_live(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if process.returncode is not None:
                raise BenchError(f"server exited with status {process.returncode} before /livez:\n{log_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/livez")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"/livez did not answer within {START_TIMEOUT_S:.0f} s:\n{log_tail(log)}")
            await asyncio.sleep(0.1)


async def flush_figures(cell: Cell, port: int) -> None:
    """Events and milliseconds per flush over the cell, from the collector's flush histograms (what a durable
    request waits for, and how full each commit is)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        try:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("collector_flush_batch_size_events_", "collector_flush_duration_seconds_")):
            values[name] = values.get(name, 0.0) + float(value)
    flushes = values.get("collector_flush_batch_size_events_count", 0.0)
    if flushes:
        cell.events_per_flush = values.get("collector_flush_batch_size_events_sum", math.nan) / flushes
        cell.ms_per_flush = values.get("collector_flush_duration_seconds_sum", math.nan) / flushes * 1000


# --- one cell ------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    scenario: Scenario
    rps: float = math.nan
    events_per_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    cpu_pct: float = math.nan
    cpu_s_per_m: float = math.nan  # the collector's CPU-seconds per million stored (acknowledged) events
    pg_cpu_s_per_m: float = math.nan  # the same for every local postgres process
    wal_per_event: float = math.nan  # bytes of WAL per acknowledged event
    events_per_flush: float = math.nan  # over the cell, from the collector's /metrics (flush histograms)
    ms_per_flush: float = math.nan  # a flush's time, from hand-over to storage to its commit (or journal)
    peak_rss_mb: float = math.nan
    idle_rss_mb: float = math.nan
    acked: int | None = None
    stored: int | None = None
    non2xx: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Bench:
    config: Config
    database_url: str | None
    processes: Processes
    payload_files: dict[str, Path]  # by Scenario.payload
    log_dir: Path

    def server_command(self, scenario: Scenario) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, HOST="127.0.0.1", LOG_LEVEL="warning")
        if scenario.bare:
            return [sys.executable, str(BARE_APP)], env
        assert self.database_url is not None
        # The packaged domains file authorizes "localhost"; pixel-management is not part of the bench.
        env.pop("PIXEL_MANAGEMENT_URL", None)
        env.update(
            ENVIRONMENT="development",
            DATABASE_URL=self.database_url,
            DATA_DIR=str(WORK_DIR),
            WORKERS=str(scenario.workers),
            ACK_MODE=scenario.ack_mode,
            AUTHORIZED_DOMAINS_FILE=str(WORK_DIR / DOMAINS_FILE),
        )
        if scenario.stalled:
            env["BUFFER_MAX_EVENTS"] = "100000"  # the default, whatever the caller's environment says
        return [sys.executable, "-m", "collector"], env

    async def run_cell(self, scenario: Scenario, run: int) -> Cell:
        cell = Cell(scenario)
        waited = await wait_quiet()
        if waited >= QUIET_MAX_WAIT_S:
            print(f"  (CPUs 0/1 still busy after {waited:.0f} s; measuring anyway)", flush=True)
        port = free_port()
        argv, env = self.server_command(scenario)
        env["PORT"] = str(port)
        log = self.log_dir / f"run{run}-{scenario.name}.log"
        with log.open("wb") as log_file:
            server = await self.processes.start(
                "taskset", "-c", scenario.server_cpus, *argv, cwd=str(REPO), env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        monitor = ServerMonitor(server.pid)
        monitor.start()
        try:
            await wait_live(server, port, log)
            await asyncio.sleep(SETTLE_S)
            if not scenario.bare:
                cell.idle_rss_mb = monitor.rss_mb()
                await self.execute("TRUNCATE events_log")
            async with self.stalled_storage(scenario.stalled):
                await self.load(cell, port, monitor)
            if not scenario.bare:
                await flush_figures(cell, port)
        finally:
            await monitor.stop()
            cell.peak_rss_mb = monitor.peak_rss_mb
            status = await self.processes.stop(server, STOP_TIMEOUT_S)
        if status is None:
            cell.problems.append(f"server did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM (killed)")
        elif status != 0:
            cell.problems.append(f"server exited with status {status}:\n{log_tail(log)}")
        if not scenario.bare:
            cell.stored = int(await self.fetchval("SELECT count(*) FROM events_log"))
            self.check_acked(cell)
            await self.execute("CHECKPOINT")  # write the cell's rows back now, not in the next cell's window
        return cell

    async def load(self, cell: Cell, port: int, monitor: ServerMonitor) -> None:
        scenario, window = cell.scenario, self.config.duration_s
        wrk_seconds = math.ceil(window) + WRK_TAIL_S  # wrk's -d is whole seconds
        argv = [
            "taskset", "-c", scenario.wrk_cpus, "wrk", f"-t{min(WRK_THREADS, scenario.connections)}",
            f"-c{scenario.connections}", f"-d{wrk_seconds}s", f"--timeout={WRK_TIMEOUT}", "-s", str(LUA_SCRIPT),
            f"http://127.0.0.1:{port}{scenario.path}", "--", str(self.payload_files[scenario.payload]),
            f"{window:.3f}", DOOR_HEADERS.get(scenario.door, ""),
            f"{self.config.rate / min(WRK_THREADS, scenario.connections):.3f}",
        ]  # fmt: skip
        wal_before = await self.wal_lsn() if not scenario.bare else None
        pg_before = postgres_ticks()
        before, started = monitor.cpu_snapshot(), time.monotonic()
        wrk = await self.processes.start(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # Server CPU is measured over the window only: during wrk's tail the server is idle on purpose.
        await asyncio.sleep(window)
        after, wall = monitor.cpu_snapshot(), time.monotonic() - started
        pg_after = postgres_ticks()
        wal_bytes = await self.wal_bytes_since(wal_before) if wal_before is not None else math.nan
        cell.cpu_pct = cpu_percent(before, after, wall)
        collector_s = cell.cpu_pct / 100 * wall
        pg_s = sum(t - pg_before.get(pid, 0) for pid, t in pg_after.items()) / CLOCK_TICKS if pg_after else math.nan
        try:
            stdout, stderr = await asyncio.wait_for(wrk.communicate(), wrk_seconds + 30)
        except TimeoutError:
            raise BenchError("wrk did not finish in time") from None
        finally:
            await self.processes.stop(wrk, 5)
        result = parse_wrk(stdout.decode(errors="replace"), stderr.decode(errors="replace"), wrk.returncode)
        received = int(result["received"])
        cell.rps = received / float(result["window_s"])
        cell.acked = int(result["ok"]) * scenario.events_per_request
        cell.events_per_s = cell.acked / float(result["window_s"])
        cell.p50_ms = float(result["p50_us"]) / 1000
        cell.p99_ms = float(result["p99_us"]) / 1000
        cell.p999_ms = float(result["p999_us"]) / 1000
        # Per event acknowledged within the window (the window's share of wrk's run): what the CPU and WAL bought.
        in_window = cell.events_per_s * wall
        if not scenario.bare and in_window > 0:
            cell.cpu_s_per_m = collector_s / in_window * 1e6
            cell.pg_cpu_s_per_m = pg_s / in_window * 1e6
            cell.wal_per_event = wal_bytes / in_window
        cell.non2xx = {str(status): int(count) for status, count in dict(result["non2xx"]).items()}
        errors = dict(result["errors"])
        cell.socket_errors = {name: int(errors[name]) for name in ("connect", "read", "write", "timeout")}
        cell.in_flight = int(result["sent"]) - received

    @contextlib.asynccontextmanager
    async def stalled_storage(self, stalled: bool) -> AsyncIterator[None]:
        """Hold an ACCESS EXCLUSIVE lock on events_log (so every COPY blocks) for the duration of the block."""
        if not stalled:
            yield
            return
        assert self.database_url is not None
        conn = await asyncpg.connect(self.database_url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("LOCK TABLE events_log IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                await transaction.rollback()
        finally:
            await conn.close()

    def check_acked(self, cell: Cell) -> None:
        if cell.acked is None or cell.stored is None or cell.acked == cell.stored:
            return
        why = []
        if cell.in_flight > 0:
            why.append(f"{cell.in_flight} request(s) were still in flight when wrk stopped")
        elif cell.in_flight < 0:
            why.append(f"wrk re-sent {-cell.in_flight} request(s) after a socket error")
        if any(cell.socket_errors.values()):
            why.append(f"wrk socket errors {cell.socket_errors}")
        kind = "LOST acknowledged events" if cell.stored < cell.acked else "stored events never acknowledged"
        cell.problems.append(
            f"acked {cell.acked} != stored {cell.stored} ({kind}: {abs(cell.acked - cell.stored)})"
            + (f"; {'; '.join(why)}" if why else "")
        )

    async def wal_lsn(self) -> float:
        """PostgreSQL's current WAL position, in bytes."""
        return float(str(await self.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")))

    async def wal_bytes_since(self, position: float) -> float:
        return await self.wal_lsn() - position

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fetchval(self, sql: str) -> object:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


def parse_wrk(stdout: str, stderr: str, returncode: int | None) -> dict[str, object]:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, object] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise BenchError(f"wrk (exit status {returncode}) printed no BENCH_RESULT line:\n{stdout}\n{stderr}")


# --- reporting -----------------------------------------------------------------------------------------------------

COLUMNS = [
    "scenario", "cpus srv/wrk", "req/s", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "server CPU %",
    "CPU s/M ev", "PG CPU s/M ev", "WAL B/ev", "ev/flush", "ms/flush", "peak RSS MB", "idle RSS MB", "acked events",
    "stored rows",
    "non-2xx", "socket errors",
]  # fmt: skip


def fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def cell_row(cell: Cell) -> list[str]:
    s = cell.scenario
    non2xx = ", ".join(f"{status}x{count}" for status, count in sorted(cell.non2xx.items())) or "0"
    return [
        s.name, f"{s.server_cpus}/{s.wrk_cpus}", fmt(cell.rps), fmt(cell.events_per_s), fmt(cell.p50_ms, 2),
        fmt(cell.p99_ms, 2), fmt(cell.p999_ms, 2), fmt(cell.cpu_pct), fmt(cell.cpu_s_per_m, 1),
        fmt(cell.pg_cpu_s_per_m, 1), fmt(cell.wal_per_event), fmt(cell.events_per_flush),
        fmt(cell.ms_per_flush, 2), fmt(cell.peak_rss_mb, 1), fmt(cell.idle_rss_mb, 1),
        fmt(cell.acked), fmt(cell.stored), non2xx, fmt(sum(cell.socket_errors.values())),
    ]  # fmt: skip


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded into columns, so the same text reads well on a terminal."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (width + 1) + ":" if i else ":" + "-" * (width + 1) for i, width in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def median_cells(runs: list[list[Cell]]) -> list[Cell]:
    """Per scenario, the median of each figure over the runs (counts are summed: they were all checked)."""
    by_name: dict[str, list[Cell]] = {}
    for cells in runs:
        for cell in cells:
            by_name.setdefault(cell.scenario.name, []).append(cell)

    def median(values: list[float]) -> float:
        present = [value for value in values if not math.isnan(value)]
        return statistics.median(present) if present else math.nan

    merged = []
    for cells in by_name.values():
        cell = Cell(cells[0].scenario)
        for name in (
            "rps", "events_per_s", "p50_ms", "p99_ms", "p999_ms", "cpu_pct", "cpu_s_per_m", "pg_cpu_s_per_m",
            "wal_per_event", "events_per_flush", "ms_per_flush", "peak_rss_mb", "idle_rss_mb",
        ):  # fmt: skip
            setattr(cell, name, median([getattr(c, name) for c in cells]))
        cell.acked = sum(c.acked or 0 for c in cells) if all(c.acked is not None for c in cells) else None
        cell.stored = sum(c.stored or 0 for c in cells) if all(c.stored is not None for c in cells) else None
        for c in cells:
            for status, count in c.non2xx.items():
                cell.non2xx[status] = cell.non2xx.get(status, 0) + count
            for name, count in c.socket_errors.items():
                cell.socket_errors[name] = cell.socket_errors.get(name, 0) + count
        merged.append(cell)
    return merged


# (label, numerator cell, its figure, denominator cell, its figure x factor, target): computed within each run,
# never across runs, and the median of those per-run ratios is the one held to the target. The -w2 cells use both
# CPUs, shared with wrk, while the bare app is one process on CPU 0: their ratio to the ceiling is printed for
# orientation.
RATIOS = [
    ("single-buffered req/s / bare-single req/s", "single-buffered", "rps", "bare-single", "rps", 1, TARGET_SINGLE),
    ("batch20-buffered events/s / (bare-batch20 req/s x 20)",
     "batch20-buffered", "events_per_s", "bare-batch20", "rps", BATCH_SIZE, TARGET_BATCH),
    ("single-durable / single-buffered events/s",
     "single-durable", "events_per_s", "single-buffered", "events_per_s", 1, TARGET_DURABLE),
    ("batch20-durable / batch20-buffered events/s",
     "batch20-durable", "events_per_s", "batch20-buffered", "events_per_s", 1, TARGET_DURABLE),
    ("batch100-buffered events/s / (bare-batch100 req/s x 100)",
     "batch100-buffered", "events_per_s", "bare-batch100", "rps", 100, TARGET_BATCH),
    ("batch100-durable / batch100-buffered events/s",
     "batch100-durable", "events_per_s", "batch100-buffered", "events_per_s", 1, TARGET_DURABLE),
    ("segment-batch20 / collect-segment-rows20 events/s (the same stored rows)",
     "segment-batch20", "events_per_s", "collect-segment-rows20", "events_per_s", 1, TARGET_DOOR),
    ("snowplow-batch20 / collect-snowplow-rows20 events/s (the same stored rows)",
     "snowplow-batch20", "events_per_s", "collect-snowplow-rows20", "events_per_s", 1, TARGET_DOOR),
    ("plausible-single / collect-plausible-rows events/s (the same stored rows)",
     "plausible-single", "events_per_s", "collect-plausible-rows", "events_per_s", 1, TARGET_DOOR),
    ("segment-batch20 / batch20-buffered events/s (the same events, /collect's leaner rows: for reference)",
     "segment-batch20", "events_per_s", "batch20-buffered", "events_per_s", 1, math.nan),
    ("snowplow-batch20 / batch20-buffered events/s (the same events, /collect's leaner rows: for reference)",
     "snowplow-batch20", "events_per_s", "batch20-buffered", "events_per_s", 1, math.nan),
    ("plausible-single / single-buffered events/s (the same events, /collect's leaner rows: for reference)",
     "plausible-single", "events_per_s", "single-buffered", "events_per_s", 1, math.nan),
    ("single-buffered-w2 req/s / bare-single req/s (w2 on 2 CPUs shared with wrk)",
     "single-buffered-w2", "rps", "bare-single", "rps", 1, TARGET_SINGLE),
    ("batch20-buffered-w2 events/s / (bare-batch20 req/s x 20) (w2 on 2 CPUs shared with wrk)",
     "batch20-buffered-w2", "events_per_s", "bare-batch20", "rps", BATCH_SIZE, TARGET_BATCH),
    ("single-durable-w2 / single-buffered-w2 events/s",
     "single-durable-w2", "events_per_s", "single-buffered-w2", "events_per_s", 1, TARGET_DURABLE),
    ("batch20-durable-w2 / batch20-buffered-w2 events/s",
     "batch20-durable-w2", "events_per_s", "batch20-buffered-w2", "events_per_s", 1, TARGET_DURABLE),
]  # fmt: skip


def verdict(value: float, target: float, at_least: bool) -> str:
    if math.isnan(value):
        return "n/a (cell not run or failed)"
    passed = value >= target if at_least else value <= target
    return "PASS" if passed else "MISS"


def ratio(cells: list[Cell], numerator: str, num_attr: str, denominator: str, den_attr: str, factor: int) -> float:
    by_name = {cell.scenario.name: cell for cell in cells}
    num, den = by_name.get(numerator), by_name.get(denominator)
    if num is None or den is None or num.problems or den.problems:
        return math.nan
    bottom = float(getattr(den, den_attr)) * factor
    return float(getattr(num, num_attr)) / bottom if bottom else math.nan


def ratio_lines(cells: list[Cell], runs: list[list[Cell]]) -> list[str]:
    """Ratios as the median of each run's own ratio (both cells of a ratio ran minutes apart, in the same run)."""
    by_name = {cell.scenario.name: cell for cell in cells}

    def get(name: str, attr: str) -> float:
        cell = by_name.get(name)
        return float(getattr(cell, attr)) if cell is not None else math.nan

    def limit(label: str, value: float, target: float, unit: str) -> str:
        shown = "-" if math.isnan(value) else f"{value:.1f} {unit}"
        return f"- {label}: **{shown}** (target <= {target:.0f} {unit}) {verdict(value, target, at_least=False)}"

    lines = []
    for label, numerator, num_attr, denominator, den_attr, factor, target in RATIOS:
        per_run = [ratio(run, numerator, num_attr, denominator, den_attr, factor) for run in runs]
        present = [value for value in per_run if not math.isnan(value)]
        value = statistics.median(present) if present else math.nan
        shown = "**-**" if math.isnan(value) else f"**{value:.2f}**"
        if len(present) > 1:
            spread = max(present) - min(present)
            shown += f" (median of runs {', '.join(f'{v:.2f}' for v in present)}; spread {spread:.2f})"
        judged = "(unjudged)" if math.isnan(target) else f"(target >= {target:.2f}) {verdict(value, target, True)}"
        lines.append(f"- {label}: {shown} {judged}")

    # A front door's CPU per event against /collect's for the same stored rows: the per-event cost. Against
    # /collect's leaner cell of the same events (no per-event time or context stored) for reference, unjudged.
    for door, base, same in (("segment-batch20", "batch20-buffered", "collect-segment-rows20"),
                             ("snowplow-batch20", "batch20-buffered", "collect-snowplow-rows20"),
                             ("plausible-single", "single-buffered", "collect-plausible-rows")):  # fmt: skip
        for other, judged in ((same, True), (base, False)):
            per_run = [ratio(run, door, "cpu_s_per_m", other, "cpu_s_per_m", 1) for run in runs]
            present = [value for value in per_run if not math.isnan(value)]
            value = statistics.median(present) if present else math.nan
            shown = "-" if math.isnan(value) else f"{value:.2f} ({', '.join(f'{v:.2f}' for v in present)})"
            target = f"(target <= 1.15) {verdict(value, 1.15, at_least=False)}" if judged else "(for reference)"
            label = "the same stored rows" if judged else "the same events, leaner rows"
            lines.append(f"- {door} CPU per event / {other}'s ({label}): **{shown}** {target}")
    lines.append(
        limit("p99 latency at 8 connections (latency-c8)", get("latency-c8", "p99_ms"), TARGET_P99_C8_MS, "ms")
    )
    # Idle RSS is taken in every collector cell; the figure is single-buffered's, else the first WORKERS=1 cell's.
    workers1 = [c for c in cells if not c.scenario.bare and c.scenario.workers == 1]
    idle_cell = by_name.get("single-buffered") or (workers1[0] if workers1 else None)
    idle_label = f"idle RSS, WORKERS=1, {SETTLE_S:.0f} s after start ({idle_cell.scenario.name if idle_cell else '-'})"
    lines.append(limit(idle_label, idle_cell.idle_rss_mb if idle_cell else math.nan, TARGET_IDLE_RSS_MB, "MB"))
    lines.append(limit("stalled-storage peak RSS", get("stalled-storage", "peak_rss_mb"), TARGET_STALLED_RSS_MB, "MB"))
    stalled = by_name.get("stalled-storage")
    if stalled is not None:
        refused = stalled.non2xx.get("503", 0)
        lines.append(f"- stalled-storage 503 answers: **{refused:,}** {'PASS' if refused else 'MISS (never refused)'}")
    return lines


def report(title: str, cells: list[Cell]) -> str:
    notes = [
        f"- {cell.scenario.name}: non-2xx {cell.non2xx}, socket errors {cell.socket_errors}"
        for cell in cells
        if cell.non2xx or any(cell.socket_errors.values())
    ]
    parts = [f"### {title}", "", markdown_table(COLUMNS, [cell_row(cell) for cell in cells])]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


# --- main ----------------------------------------------------------------------------------------------------------


def revision() -> str:
    """The commit measured, and whether the service code had uncommitted changes (the numbers then describe those)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "collector", "pyproject.toml"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def header_lines(config: Config, database: str, about: str) -> list[str]:
    passed = sorted(name for name in os.environ if name in PASSED_SETTINGS)
    return [
        "## Collector benchmark",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {about}",
        f"- {len(config.scenarios)} cell(s) x {config.runs} run(s), {config.duration_s:g} s of wrk each "
        f"({WRK_THREADS} threads, 64 connections unless named -cN; +{WRK_TAIL_S} s so the last answers arrive)"
        + (f"; offered {config.rate:,.0f} requests/s (BENCH_RATE)" if config.rate else ""),
        "- CPU pinning (taskset): server on CPU 0 and wrk on CPU 1; the -w2 cells put the server's two workers "
        "and wrk on both CPUs 0,1. PostgreSQL is not pinned.",
        f"- database: {database}",
        f"- collector settings passed through from the environment: {', '.join(passed) or 'none'}",
        "- server CPU % = utime+stime of the server and its children over the window / wall time (200 % = both CPUs)",
        "- peak RSS = sum of VmHWM over the server process and its workers",
        "- CPU s/M ev = the collector's CPU-seconds per million events acknowledged in the window; PG CPU s/M ev the"
        " same for every local process named postgres (- when PostgreSQL is remote); WAL B/ev = bytes of WAL"
        " written over the window per acknowledged event",
        "- ev/flush, ms/flush = events per flush and a flush's time from hand-over to commit (the collector's flush"
        " histograms over the whole cell)",
    ]


PASSED_SETTINGS = {
    "FLUSH_MAX_EVENTS", "FLUSH_INTERVAL_MS", "FLUSH_CONCURRENCY", "BUFFER_MAX_EVENTS", "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "DRAIN_TIMEOUT_S", "MAX_BODY_BYTES", "MAX_EVENTS_PER_REQUEST", "MAX_EVENT_BYTES", "AUTH_CACHE_TTL_S",
}  # fmt: skip


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    except OSError:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk, or run `make bench` as root)") from None
    return out.split()[1] if out.startswith("wrk ") else "?"


DOMAINS_FILE = "domains.json"


def write_payloads(directory: Path) -> dict[str, Path]:
    doors = door_payloads()
    bodies: dict[str, dict[str, object]] = {"collect-1": single_payload(), **doors, **same_rows_payloads(doors)}
    for size in (BATCH_SIZE, 100):
        bodies[f"collect-{size}"] = batch_payload(size)
    files = {}
    for key, body in bodies.items():
        files[key] = directory / f"{key}.json"
        files[key].write_bytes(orjson.dumps(body))
    # "localhost" as the development defaults have it, plus the Segment cell's write key.
    domains = {"localhost": {"client_id": "client_local_dev", "write_keys": [WRITE_KEY]}}
    (directory / DOMAINS_FILE).write_bytes(orjson.dumps(domains))
    return files


async def run_all(config: Config, database_url: str | None, database: str, about: str) -> int:
    processes = Processes()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log_dir = WORK_DIR / "logs"
    log_dir.mkdir(exist_ok=True)
    bench = Bench(config, database_url, processes, write_payloads(WORK_DIR), log_dir)
    output = header_lines(config, database, about)
    print("\n".join(output), flush=True)
    runs: list[list[Cell]] = []
    failures: list[str] = []
    try:
        for run in range(1, config.runs + 1):
            cells = []
            for scenario in config.scenarios:
                print(f"run {run}/{config.runs}: {scenario.name} ...", flush=True)
                try:
                    cell = await bench.run_cell(scenario, run)
                except Exception as exc:  # one broken cell is reported (and fails the run); the others still run
                    cell = Cell(scenario, problems=[f"{type(exc).__name__}: {exc}"])
                for problem in cell.problems:
                    failures.append(f"run {run} {scenario.name}: {problem}")
                    print(f"!!! FAIL run {run} {scenario.name}: {problem}", flush=True)
                cells.append(cell)
            runs.append(cells)
            table = report(f"Run {run}", cells)
            print("\n" + table + "\n", flush=True)
            output += ["", table]
    finally:
        await processes.cleanup()
    final = runs[-1]
    if config.runs > 1:
        final = median_cells(runs)
        table = report(f"Median of {config.runs} runs (acked/stored/non-2xx summed)", final)
        print(table + "\n")
        output += ["", table]
    title = "### Ratios and targets (PASS/MISS is informative; only acked != stored fails)"
    ratios = [title, "", *ratio_lines(final, runs)]
    print("\n".join(ratios))
    output += ["", *ratios]
    if failures:
        verdict = ["", "### FAILED", "", *(f"- {failure}" for failure in failures)]
        output += verdict
        print("\n" + "!" * 100)
        print("BENCH FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        print("!" * 100)
    else:
        output += ["", "All collector cells: acked events == stored rows."]
        print("\nAll collector cells: acked events == stored rows.")
    if config.output is not None:
        config.output.write_text("\n".join(output) + "\n")
        print(f"Markdown written to {config.output}")
    return 1 if failures else 0


async def run_guarded(config: Config, database_url: str | None, database: str, about: str) -> int:
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C does under asyncio.run: cancel, run every finally.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_all(config, database_url, database, about)


@contextlib.contextmanager
def database(config: Config) -> Iterator[tuple[str | None, str]]:
    needs_db = any(not scenario.bare for scenario in config.scenarios)
    if not needs_db:
        yield None, "none (bare cells only)"
    elif config.database_url:
        yield config.database_url, "BENCH_DATABASE_URL / DATABASE_URL (events_log is truncated before each cell)"
    else:
        sys.path.insert(0, str(REPO))
        from collector.ops.embedded import embedded_postgres

        with embedded_postgres(str(WORK_DIR)) as url:
            yield url, f"embedded PostgreSQL in {WORK_DIR / 'postgres'}"


def main() -> int:
    config = load_config(dict(os.environ))
    cpus = os.sched_getaffinity(0)
    if not {0, 1} <= cpus:
        raise SystemExit(f"bench: needs CPUs 0 and 1 to pin server and wrk; this process may use {sorted(cpus)}")
    # A shell starting us in the background hands down SIGINT ignored; Ctrl-C / kill -INT must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    about = f"commit {revision()}, wrk {wrk_version()}"  # also: no wrk, no database started
    with database(config) as (url, description):
        try:
            return asyncio.run(run_guarded(config, url, description, about))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\nbench: interrupted; every process it started was stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
