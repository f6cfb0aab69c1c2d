"""What every fault case does around its fault: load, watch /health, settle, and check the ledger against the table."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.harness import Ledger, stored_ids
from tests.system.faults import report


async def health(url: str, *, timeout_s: float = 10) -> dict[str, Any] | None:
    """/health's body (it answers 503 with the same body while PostgreSQL is unreachable); None if no answer."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{url}/health")
        body: dict[str, Any] = response.json()
        return body
    except (httpx.TransportError, ValueError):
        return None


async def poll(check: Callable[[], Awaitable[Any]], timeout_s: float, *, interval_s: float = 0.1, what: str) -> Any:
    """Call `check` until it returns something truthy (returned); fail after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(interval_s)


class HealthWatch:
    """Polls /health in the background, keeping the last body and the largest journal seen."""

    def __init__(self, url: str, *, interval_s: float = 0.2) -> None:
        self.url = url
        self.interval_s = interval_s
        self.last: dict[str, Any] | None = None
        self.journal_peak = 0
        self.failing_seen = False

    def note(self, body: dict[str, Any] | None) -> None:
        if body is not None:
            self.last = body
            self.journal_peak = max(self.journal_peak, body["journal"]["bytes"])
            self.failing_seen = self.failing_seen or body["flusher"]["failing"]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HealthWatch]:
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                self.note(await health(self.url))
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)

        task = asyncio.create_task(watch())
        try:
            yield self
        finally:
            stop.set()
            await task


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


async def duplicate_ids(database_url: str) -> int:
    """How many event ids are stored more than once."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT event_id FROM events_log GROUP BY event_id HAVING count(*) > 1")
        return len(rows)
    finally:
        await conn.close()


async def is_stored(database_url: str, event_id: uuid.UUID) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM events_log WHERE event_id = $1", event_id))
    finally:
        await conn.close()


async def post_probe(url: str, *, timeout_s: float = 10) -> tuple[int | None, uuid.UUID]:
    """Send one new event; its answer's status (None: no answer within `timeout_s`) and id."""
    event_id = uuid.uuid4()
    payload = {"eventType": "probe", "eventId": str(event_id), "siteId": "localhost", "sessionId": "probe"}
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        try:
            response = await client.post(f"{url}/collect", json=payload)
        except httpx.TimeoutException:
            return None, event_id
    return response.status_code, event_id


async def recovery_seconds(url: str, database_url: str, since: float, *, within_s: float = 10) -> float:
    """Send a new event (again while answered 503) and wait until it is in the table: seconds since `since`
    (monotonic); fail past `within_s`."""
    deadline = since + within_s
    while True:
        status, event_id = await post_probe(url, timeout_s=max(deadline - time.monotonic(), 0.1))
        if status is not None and 200 <= status < 300:
            break
        assert status == 503 and time.monotonic() < deadline, f"a new event got {status} after the fault ended"
        await asyncio.sleep(0.1)
    await poll(lambda: is_stored(database_url, event_id), max(deadline - time.monotonic(), 0.1), what="a new event")
    return time.monotonic() - since


async def settle(url: str, *, timeout_s: float = 60) -> dict[str, Any]:
    """Wait until the collector holds nothing: database reachable, journal replayed, buffer empty."""

    async def quiet() -> dict[str, Any] | None:
        body = await health(url)
        if body and body["status"] == "healthy" and not body["journal"]["bytes"] and not body["buffer"]["depth"]:
            return body
        return None

    body: dict[str, Any] = await poll(quiet, timeout_s, interval_s=0.2, what="journal and buffer to empty")
    return body


async def stop_gracefully(proc: subprocess.Popen[bytes], log: Path, *, timeout_s: float = 30) -> None:
    proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(proc.wait, timeout_s)
    assert exit_code == 0, tail(log)


async def kill(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 the collector (with WORKERS=1 the one process) and reap it."""
    proc.kill()
    await asyncio.to_thread(proc.wait, 10)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def verify(
    case: str, ledger: Ledger, database_url: str, *, no_duplicates: bool = True, **figures: Any
) -> tuple[int, int]:
    """Record the case's figures, then assert every acknowledged event is stored (and, if asked, only once)."""
    stored = await stored_ids(database_url)
    lost = ledger.acked - stored
    dups = await duplicate_ids(database_url)
    report.record(case, acked=len(ledger.acked), stored=len(stored), lost=len(lost), dups=dups, **figures)
    assert ledger.acked, "the load driver got no acknowledgement at all"
    assert not lost, f"{len(lost)} of {len(ledger.acked)} acknowledged events are not stored, e.g. {next(iter(lost))}"
    if no_duplicates:
        assert dups == 0, f"{dups} event ids are stored more than once"
    return len(lost), dups
