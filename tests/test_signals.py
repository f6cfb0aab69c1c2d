"""Every way a terminal stops `make run` (closing it: SIGHUP; Ctrl+C: SIGINT; kill: SIGTERM) is a graceful stop.

The real `python -m collector` runs with no DATABASE_URL (so it starts its embedded PostgreSQL) in a process group of
its own, as a terminal's job is, and the signal goes to the whole group, workers included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from collector.embedded import embedded_postgres
from tests.harness import collector_process, stored_ids, wait_until_live

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
