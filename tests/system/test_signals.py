"""Every way a terminal stops `make run` (closing it: SIGHUP; Ctrl+C: SIGINT; kill: SIGTERM) is a graceful stop.

The real `python -m collector` runs with no DATABASE_URL (so it starts its embedded PostgreSQL) in a process group of
its own, as a terminal's job is, and the signal goes to the whole group, workers included.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from collector.ops.embedded import embedded_postgres
from tests.harness import collector_process, free_port, stored_ids, wait_until_live

pytestmark = pytest.mark.timeout(120)

EVENTS = 5


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def _post_events(url: str) -> set[uuid.UUID]:
    """Send EVENTS single events and return the ids the collector acknowledged."""
    ids = {uuid.uuid4() for _ in range(EVENTS)}
    async with httpx.AsyncClient(base_url=url) as client:
        for event_id in ids:
            event = {"eventType": "load", "eventId": str(event_id), "siteId": "localhost", "sessionId": "terminal"}
            response = await client.post("/collect", json=event)
            assert response.is_success, response.text
    return ids


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGHUP, 1), (signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGHUP, 2)],
    ids=["SIGHUP", "SIGINT", "SIGTERM", "SIGHUP-2-workers"],
)
async def test_a_terminal_stop_stores_every_acknowledged_event_and_stops_the_database(
    tmp_path: Path, signum: signal.Signals, workers: int
) -> None:
    """A signal to the process group right after acknowledged events: all are stored, nothing is left running."""
    data = tmp_path / "data"
    # A flush interval far beyond the test: the acknowledged events are still in the buffer when the signal comes.
    env = {"WORKERS": str(workers), "FLUSH_INTERVAL_MS": "60000", "DRAIN_TIMEOUT_S": "20"}
    with collector_process(None, tmp_path, new_session=True, **env) as (proc, url):
        await wait_until_live(proc, url)
        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        acked = await _post_events(url)
        os.killpg(proc.pid, signum)
        try:
            exit_code: int | None = await asyncio.to_thread(proc.wait, 40)
        except subprocess.TimeoutExpired:
            exit_code = None
        for _ in range(100):  # workers and the database get 10 s more to be gone
            if not (_group_alive(proc.pid) or _alive(postmaster)):
                break
            await asyncio.sleep(0.1)
        group_left, database_left = _group_alive(proc.pid), _alive(postmaster)
    log = (tmp_path / "collector.log").read_text(errors="replace")
    # The same data directory again (this also stops a database a failing run left behind).
    with embedded_postgres(str(data)) as database_url:
        stored = await stored_ids(database_url)
    assert exit_code == 0, log
    assert not group_left, "a worker outlived the stop"
    assert not database_left, "the embedded PostgreSQL was left running"
    missing = acked - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events were lost\n{log}"
    assert "Stopped embedded PostgreSQL" in log


# Makes the terminal named in argv[1] the controlling terminal of this new session (opening it as session leader
# does), as a shell does for its jobs, then runs the collector on it.
ON_TERMINAL = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for std in (0, 1, 2):
    os.dup2(fd, std)
os.execv(sys.executable, [sys.executable, "-m", "collector"])
"""


@pytest.mark.parametrize("workers", [1, 2])
async def test_closing_the_terminal_stores_every_acknowledged_event(tmp_path: Path, workers: int) -> None:
    """The collector runs on a terminal (a pty) that then closes: the kernel's hangup stops it gracefully."""
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"PORT": str(port), "DATA_DIR": str(data), "WORKERS": str(workers), "FLUSH_INTERVAL_MS": "60000"}
    master, slave = os.openpty()
    screen = bytearray()
    closing = threading.Event()

    def read_screen() -> None:  # until the terminal closes (a pty whose output nobody reads would block its writer)
        while not closing.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # EIO while no process has the terminal open (yet, or any more)
                    closing.wait(0.05)

    def close_terminal() -> None:
        if not closing.is_set():
            closing.set()
            reader.join()
            os.close(master)

    proc = subprocess.Popen(
        [sys.executable, "-c", ON_TERMINAL, os.ttyname(slave)], env=env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    reader = threading.Thread(target=read_screen, daemon=True)
    reader.start()
    try:
        await wait_until_live(proc, f"http://127.0.0.1:{port}")
        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        acked = await _post_events(f"http://127.0.0.1:{port}")
        close_terminal()  # the terminal window closes
        try:
            exit_code: int | None = await asyncio.to_thread(proc.wait, 40)
        except subprocess.TimeoutExpired:
            exit_code = None
        for _ in range(100):
            if not (_group_alive(proc.pid) or _alive(postmaster)):
                break
            await asyncio.sleep(0.1)
        group_left, database_left = _group_alive(proc.pid), _alive(postmaster)
    finally:
        close_terminal()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with embedded_postgres(str(data)) as database_url:
        stored = await stored_ids(database_url)
    shown = screen.decode(errors="replace")
    assert exit_code == 0, shown
    assert not group_left, "a worker outlived the hangup"
    assert not database_left, "the embedded PostgreSQL was left running"
    assert not acked - stored, f"{len(acked - stored)} of {len(acked)} acknowledged events were lost\n{shown}"
