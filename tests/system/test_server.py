"""End to end: the real `python -m collector` under uvicorn on loopback, stopped with SIGTERM mid-load."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.harness import Ledger, collector_process, free_port, loading, stored_ids, wait_until_live
from tests.scrape import Samples, parse, run_promtool, value

pytestmark = pytest.mark.timeout(120)


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
        async with loading(ledger, url):
            await asyncio.sleep(1.5)
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
            assert (single.status_code, single.json()["status"]) == (200, "success")
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


async def test_metrics_sum_both_workers(clean_db: str, tmp_path: Path) -> None:
    """WORKERS=2: whichever worker answers a scrape reports both workers' events, and the metrics folder is removed
    at exit."""
    with collector_process(clean_db, tmp_path, WORKERS="2", FLUSH_INTERVAL_MS="100") as (proc, url):
        await wait_until_live(proc, url)
        assert (tmp_path / "data" / "metrics").is_dir()
        ledger = Ledger()
        async with loading(ledger, url):
            await asyncio.sleep(1.5)
        assert ledger.acked and ledger.refused == 0
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            accepted_by_pid: dict[int, int] = {}
            async with asyncio.timeout(30):
                while len(accepted_by_pid) < 2:
                    for health in await asyncio.gather(*(client.get("/health") for _ in range(8))):
                        accepted_by_pid[health.json()["worker_pid"]] = health.json()["events"]["accepted"]
            pids = set(accepted_by_pid)
            assert all(accepted_by_pid.values()), f"the load reached one worker only: {accepted_by_pid}"
            # Each worker syncs its counters every second: poll until every acknowledged event shows as stored.
            async with asyncio.timeout(30):
                while True:
                    text = (await client.get("/metrics")).text
                    samples = parse(text)
                    if value(samples, "collector_events_stored_total") == len(ledger.acked):
                        break
                    await asyncio.sleep(0.2)
        assert value(samples, "collector_events_accepted_total") == sum(accepted_by_pid.values()) == len(ledger.acked)
        assert value(samples, "collector_events_received_total") == len(ledger.acked)
        assert value(samples, "collector_flush_batch_size_events_sum") == len(ledger.acked)
        capacity = {dict(labels)["pid"] for (name, labels) in samples if name == "collector_buffer_capacity_events"}
        assert capacity == {str(pid) for pid in pids}, "one buffer capacity series per live worker"
        assert value(samples, "collector_buffer_capacity_events") == 200_000
        assert value(samples, "collector_build_info") == 1
        if shutil.which("promtool"):
            check = run_promtool("check", "metrics", stdin=text)
            assert check.returncode == 0, check.stdout + check.stderr
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert not (tmp_path / "data" / "metrics").exists(), "the metrics folder was left behind"
    assert ledger.acked == await stored_ids(clean_db)


async def test_metrics_forget_a_killed_worker_but_keep_its_counts(clean_db: str, tmp_path: Path) -> None:
    """WORKERS=2, one worker SIGKILLed and restarted by uvicorn: its gauges leave the scrape, its counters stay."""
    with collector_process(clean_db, tmp_path, WORKERS="2", FLUSH_INTERVAL_MS="50") as (proc, url):
        await wait_until_live(proc, url)
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:

            async def live_pids(exclude: set[int]) -> set[int]:
                pids: set[int] = set()
                async with asyncio.timeout(60):
                    while len(pids) < 2:
                        for health in await asyncio.gather(*(client.get("/health") for _ in range(8))):
                            pids.add(health.json()["worker_pid"])
                        pids -= exclude
                return pids

            async def scrape_when(check: Callable[[Samples], bool]) -> Samples:
                async with asyncio.timeout(30):
                    while not check(samples := parse((await client.get("/metrics")).text)):
                        await asyncio.sleep(0.2)
                return samples

            def gauge_pids(samples: Samples) -> set[str]:
                return {dict(ls)["pid"] for (name, ls) in samples if name == "collector_buffer_capacity_events"}

            first = await live_pids(set())
            batch = {"eventType": "batch", "siteId": "localhost", "events": [{"eventType": "e"}] * 5}
            for _ in range(20):
                assert (await client.post("/collect", json=batch)).status_code == 200
            before = await scrape_when(lambda s: value(s, "collector_events_stored_total") == 100)
            assert gauge_pids(before) == {str(p) for p in first}
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            now = await live_pids({victim})
            assert len(now) == 2 and victim not in now
            after = await scrape_when(lambda s: gauge_pids(s) == {str(p) for p in now})
        assert value(after, "collector_events_stored_total") == 100, "a dead worker's counts must stay in the sum"
        assert value(after, "collector_buffer_capacity_events") == 200_000
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0


async def test_workers_that_cannot_start_stop_the_service_instead_of_restarting(tmp_path: Path) -> None:
    """WORKERS=2 whose workers fail at startup (no PostgreSQL, after ~30 s of retries): the parent exits 3, once."""
    unreachable = f"postgresql://collector@127.0.0.1:{free_port()}/events"
    with collector_process(unreachable, tmp_path, WORKERS="2") as (proc, _url):
        exit_code = await asyncio.to_thread(proc.wait, 60)
    log = (tmp_path / "collector.log").read_text()
    assert exit_code == 3, log
    assert log.count("Application startup failed") <= 2, "a worker that cannot start was started again"
    assert "failed to start; stopping the service" in log


async def test_the_parent_of_two_workers_loads_neither_uvicorn_nor_the_app(clean_db: str, tmp_path: Path) -> None:
    """WORKERS=2 with pixel-management set: the supervising parent imports no uvicorn, aiohttp or app module."""
    env = {"WORKERS": "2", "PIXEL_MANAGEMENT_URL": "http://127.0.0.1:9"}  # never called: nothing is posted
    with collector_process(clean_db, tmp_path, **env) as (proc, url):
        await wait_until_live(proc, url)
        maps = await asyncio.to_thread(Path(f"/proc/{proc.pid}/maps").read_text)
        children = (await asyncio.to_thread(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text)).split()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    # Extension modules show in the memory map of whoever imported them; the workers have them, the parent must not.
    for library in ("uvloop", "httptools", "aiohttp", "asyncpg"):
        assert library not in maps, f"the parent loaded {library}"
    assert len(children) == 2, "the parent runs exactly its two workers (no multiprocessing resource tracker)"
