"""End to end: the real `python -m collector` under uvicorn on loopback, stopped with SIGTERM mid-load."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def collector_process(
    database_url: str | None, tmp_path: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `python -m collector` on a free loopback port (no DATABASE_URL: embedded); kill it if left running."""
    port = free_port()
    log = (tmp_path / "collector.log").open("wb")
    inherited = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env = {
        **inherited,
        **({"DATABASE_URL": database_url} if database_url else {}),
        "PORT": str(port),
        "DATABASE_POOL_SIZE": "2",
        "DATABASE_MAX_OVERFLOW": "2",
        "DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "collector"], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def wait_until_live(proc: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(30):
        while True:
            assert proc.poll() is None, "the collector exited during startup"
            try:
                if (await client.get(f"{url}/livez")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


class Ledger:
    """The load driver's record of every event id the collector acknowledged with a 2xx."""

    def __init__(self) -> None:
        self.acked: set[uuid.UUID] = set()
        self.refused = 0
        self.pids: set[int] = set()

    async def drive(self, url: str, stop: asyncio.Event, *, connections: int = 8, batch: int = 5) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            await asyncio.gather(*(self._loop(client, stop, batch) for _ in range(connections)))

    async def _loop(self, client: httpx.AsyncClient, stop: asyncio.Event, batch: int) -> None:
        while not stop.is_set():
            ids = [uuid.uuid4() for _ in range(batch)]
            payload = {
                "eventType": "batch",
                "siteId": "localhost",
                "sessionId": "load",
                "events": [{"eventType": "load", "eventId": str(i)} for i in ids],
            }
            try:
                response = await client.post("/collect", json=payload)
            except httpx.TransportError:
                self.refused += 1
                await asyncio.sleep(0.01)
                continue
            if 200 <= response.status_code < 300:
                self.acked.update(ids)
            else:
                assert response.status_code == 503, response.text
                self.refused += 1


async def stored_ids(database_url: str) -> set[uuid.UUID]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM events_log WHERE event_type = 'load'")}
    finally:
        await conn.close()


@pytest.fixture
async def clean_db(database_url: str, db: asyncpg.Connection) -> AsyncIterator[str]:
    """The test database URL with events_log emptied first."""
    yield database_url


@pytest.mark.parametrize("ack_mode", ["buffered", "durable"])
async def test_sigterm_mid_load_loses_no_acknowledged_event(clean_db: str, tmp_path: Path, ack_mode: str) -> None:
    """SIGTERM while load runs: the process drains and exits 0, and every acknowledged event is in the table."""
    with collector_process(clean_db, tmp_path, ACK_MODE=ack_mode, FLUSH_INTERVAL_MS="500") as (proc, url):
        await wait_until_live(proc, url)
        ledger = Ledger()
        stop = asyncio.Event()
        load = asyncio.create_task(ledger.drive(url, stop))
        await asyncio.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(proc.wait, 30)
        stop.set()
        await load
    log = (tmp_path / "collector.log").read_text()
    assert exit_code == 0, log
    assert ledger.acked, "the load driver got no acknowledgement at all"
    missing = ledger.acked - await stored_ids(clean_db)
    assert not missing, f"{len(missing)} of {len(ledger.acked)} acknowledged events were lost"
    assert "flusher stopped:" in log and "lost=0" in log


async def test_two_workers_share_the_port_and_both_store(clean_db: str, tmp_path: Path) -> None:
    """WORKERS=2 runs two processes with their own buffers; both serve, and a SIGTERM loses nothing."""
    with collector_process(clean_db, tmp_path, WORKERS="2", FLUSH_INTERVAL_MS="200") as (proc, url):
        await wait_until_live(proc, url)
        pids = set()
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            async with asyncio.timeout(30):
                while len(pids) < 2:
                    health = await asyncio.gather(*(client.get("/health") for _ in range(8)))
                    pids.update(h.json()["worker_pid"] for h in health)
        ledger = Ledger()
        stop = asyncio.Event()
        load = asyncio.create_task(ledger.drive(url, stop))
        await asyncio.sleep(1.5)
        stop.set()
        await load
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(proc.wait, 30)
    log = (tmp_path / "collector.log").read_text()
    assert exit_code == 0, log
    assert len(pids) == 2 and proc.pid not in pids
    assert ledger.acked and ledger.refused == 0
    assert ledger.acked == await stored_ids(clean_db)
    assert log.count("flusher stopped:") == 2


async def test_make_run_defaults_serve_the_seed_examples(tmp_path: Path) -> None:
    """With no DATABASE_URL the service starts its embedded PostgreSQL, stores the seed's curl events, and stops it."""
    seed_single = {"eventType": "test_single", "sessionId": "test_session_001", "siteId": "localhost"}
    seed_batch = {
        "eventType": "batch",
        "sessionId": "test_session_002",
        "siteId": "localhost",
        "events": [
            {"eventType": "click", "eventData": {"element": "button1"}},
            {"eventType": "scroll", "eventData": {"depth": 25}},
            {"eventType": "form_focus", "eventData": {"field": "email"}},
        ],
    }
    with collector_process(None, tmp_path) as (proc, url):
        await wait_until_live(proc, url)
        async with httpx.AsyncClient(base_url=url) as client:
            single = await client.post("/collect", json=seed_single)
            batch = await client.post("/collect", json=seed_batch)
            assert (single.status_code, single.json()["status"]) == (202, "success")
            assert batch.json()["events_processed"] == 3
            async with asyncio.timeout(10):
                while (await client.get("/events/count")).json()["total_events"] < 4:
                    await asyncio.sleep(0.05)
            recent = (await client.get("/events/recent")).json()
        assert {e["client_id"] for e in recent} == {"client_local_dev"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    log = (tmp_path / "collector.log").read_text()
    assert "Started embedded PostgreSQL" in log and "Stopped embedded PostgreSQL" in log
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists(), "the embedded database was left running"
