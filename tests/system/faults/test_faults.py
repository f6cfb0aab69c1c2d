"""Fault injection against the real `python -m collector`: crashes, PostgreSQL outages and hangs, under load.

Every case drives load with tests.harness.Ledger (unique event ids; only 2xx answers are recorded), injects its
fault, lets things go quiet, and checks the ledger against `events_log`. Each has a fast variant that `make test`
runs and a long one (`-m faults`, FAULTS_LONG=1) that `make faults` runs. SIGTERM mid-load is in
tests/system/test_server.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Ledger, collector_process, free_port, loading, stored_ids, wait_until_live
from tests.system.faults import report
from tests.system.faults.driver import (
    HealthWatch,
    health,
    kill,
    peak_rss_mb,
    poll,
    post_probe,
    recovery_seconds,
    settle,
    stop_gracefully,
    tail,
    verify,
)
from tests.system.faults.pgcontrol import StoppablePostgres
from tests.system.faults.pgrelay import PgRelay

LONG = os.environ.get("FAULTS_LONG") == "1"
VARIANTS = [
    pytest.param(False, id="fast", marks=pytest.mark.timeout(150)),
    pytest.param(
        True,
        id="long",
        marks=[
            pytest.mark.faults,
            pytest.mark.skipif(not LONG, reason="long variant: make faults (FAULTS_LONG=1)"),
            pytest.mark.timeout(900),
        ],
    ),
]
RSS_LIMIT_MB = 300


def journal_segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "journal").glob("w*/seg-*.log"))


async def journal_bytes(url: str) -> int:
    body = await health(url)
    return 0 if body is None else int(body["journal"]["bytes"])


@pytest.mark.parametrize("long", VARIANTS)
async def test_sigkill_mid_load_durable_loses_nothing(pg: StoppablePostgres, tmp_path: Path, long: bool) -> None:
    """kill -9 mid-load again and again (every other time with PostgreSQL down, leaving a journal), restarting on
    the same DATA_DIR: every 200 ends up stored exactly once."""
    cycles = 20 if long else 5
    rng = random.Random(20)
    ledger = Ledger()
    port = free_port()
    env = {"ACK_MODE": "durable", "JOURNAL_SEGMENT_BYTES": str(256 * 1024)}
    journal_peak, rss, crashes_with_journal = 0, 0.0, 0
    for cycle in range(cycles):
        pg_down = cycle % 2 == (cycles - 1) % 2  # the last crash always leaves a journal for the final start
        orphans = {segment.parent for segment in journal_segments(tmp_path)}
        with collector_process(pg.url, tmp_path, port=port, **env) as (proc, url):
            await wait_until_live(proc, url)
            assert not any(folder.exists() for folder in orphans), "a dead worker's journal was not adopted"
            async with loading(ledger, url):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                if pg_down:
                    await asyncio.to_thread(pg.stop, "immediate")
                    journal_peak = max(journal_peak, await poll(lambda: journal_bytes(url), 10, what="a journal"))
                    await asyncio.sleep(rng.uniform(0.0, 0.5))
                rss = max(rss, peak_rss_mb(proc.pid))
                await kill(proc)
        crashes_with_journal += bool(journal_segments(tmp_path))
        await asyncio.to_thread(pg.ensure_running)
    # A last start adopts the journal the last crash left and replays it.
    orphans = {segment.parent for segment in journal_segments(tmp_path)}
    with collector_process(pg.url, tmp_path, port=port, **env) as (proc, url):
        await wait_until_live(proc, url)
        assert orphans and not any(folder.exists() for folder in orphans), "the last crash's journal was not adopted"
        started = time.monotonic()
        final = await settle(url)
        recovery = time.monotonic() - started
        rss = max(rss, peak_rss_mb(proc.pid))
        await stop_gracefully(proc, tmp_path / "collector.log")
    assert not journal_segments(tmp_path), "journal segments were left after the replay"
    await verify(
        f"sigkill-durable-x{cycles}",
        ledger,
        pg.url,
        journal_peak_bytes=journal_peak,
        rss_peak_mb=rss,
        recovery_s=recovery,
        crashes_leaving_journal=crashes_with_journal,
        final_replayed=final["events"]["replayed"],
        final_deduplicated=final["events"]["deduplicated"],
        refused=ledger.refused,
    )
    assert crashes_with_journal >= cycles // 2


@pytest.mark.parametrize("long", VARIANTS)
async def test_sigkill_mid_load_buffered_loses_at_most_the_buffer(
    pg: StoppablePostgres, tmp_path: Path, long: bool
) -> None:
    """kill -9 mid-load in buffered mode loses at most the buffer depth read just before, plus what was acknowledged
    after that read."""
    rounds = 6 if long else 2
    rng = random.Random(7)
    # A flush every second, whatever the count: the buffer holds a second's worth of events at any time.
    env = {"ACK_MODE": "buffered", "FLUSH_INTERVAL_MS": "1000", "FLUSH_MAX_EVENTS": "50000"}
    totals = {"acked": 0, "lost": 0, "bound": 0}
    rss = 0.0
    for round_ in range(rounds):
        ledger = Ledger()
        with collector_process(pg.url, tmp_path, **env) as (proc, url):
            await wait_until_live(proc, url)
            async with loading(ledger, url), httpx.AsyncClient(base_url=url, timeout=10) as client:
                await asyncio.sleep(rng.uniform(1.0, 2.5))
                rss = max(rss, peak_rss_mb(proc.pid))
                acked_before_read = len(ledger.acked)
                depth = (await client.get("/health")).json()["buffer"]["depth"]
                proc.kill()  # at once: what is acknowledged from here on counts on top of `depth`
                await asyncio.to_thread(proc.wait, 10)
            acked_after_read = len(ledger.acked) - acked_before_read
        lost = len(ledger.acked - await stored_ids(pg.url))
        bound = depth + acked_after_read
        print(
            f"\n[faults] sigkill-buffered round {round_}: acked={len(ledger.acked)} lost={lost} depth_read={depth}"
            f" acked_after_read={acked_after_read} bound={bound}",
            flush=True,
        )
        assert ledger.acked
        assert lost <= bound, f"lost {lost} acknowledged events; the buffer held {depth} (+{acked_after_read} after)"
        totals["acked"] += len(ledger.acked)
        totals["lost"] += lost
        totals["bound"] += bound
    report.record(
        f"sigkill-buffered-x{rounds}",
        acked=totals["acked"],
        lost=totals["lost"],
        lost_bound=totals["bound"],
        rss_peak_mb=rss,
    )


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
@pytest.mark.parametrize("long", VARIANTS)
async def test_postgres_restart_mid_load_durable(
    pg: StoppablePostgres, tmp_path: Path, long: bool, stop_mode: str
) -> None:
    """PostgreSQL restarted mid-load in durable mode: no 200 is lost, and ingest recovers by itself within 10 s."""
    restarts = 5 if long else 1
    ledger = Ledger()
    recoveries = []
    with collector_process(pg.url, tmp_path, ACK_MODE="durable") as (proc, url):
        await wait_until_live(proc, url)
        watch = HealthWatch(url)
        async with watch.running(), loading(ledger, url):
            for _ in range(restarts):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(pg.stop, stop_mode)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(pg.start)
                recoveries.append(await recovery_seconds(url, pg.url, time.monotonic()))
            await asyncio.sleep(1.0)
        final = await settle(url)
        rss = peak_rss_mb(proc.pid)
        await stop_gracefully(proc, tmp_path / "collector.log")
    await verify(
        f"pg-restart-{stop_mode}-durable-x{restarts}",
        ledger,
        pg.url,
        journal_peak_bytes=watch.journal_peak,
        rss_peak_mb=rss,
        recovery_s=max(recoveries),
        journaled=final["events"]["journaled"],
        replayed=final["events"]["replayed"],
        deduplicated=final["events"]["deduplicated"],
        refused=ledger.refused,
    )


@pytest.mark.parametrize("ack_mode", ["durable", "buffered"])
@pytest.mark.parametrize("long", VARIANTS)
async def test_postgres_down_under_load_spills_and_replays(
    pg: StoppablePostgres, tmp_path: Path, long: bool, ack_mode: str
) -> None:
    """PostgreSQL down for a while under load: batches spill to the journal, are replayed once it is back, none is
    lost, and the collector's memory stays bounded."""
    down_s = 60.0 if long else 5.0
    # Buffered batches spill once the buffer is half full: keep it small enough to get there in seconds.
    env = {"ACK_MODE": ack_mode, "BUFFER_MAX_EVENTS": "4000"}
    ledger = Ledger()
    with collector_process(pg.url, tmp_path, **env) as (proc, url):
        await wait_until_live(proc, url)
        watch = HealthWatch(url)
        async with watch.running(), loading(ledger, url):
            await asyncio.sleep(1.0)
            await asyncio.to_thread(pg.stop, "fast")
            await asyncio.sleep(down_s)
            spilled = watch.journal_peak
            acked_while_down = len(ledger.acked)
            await asyncio.to_thread(pg.start)
            back = time.monotonic()
            # The new event is replayed behind the whole journal: a minute's outage takes longer than 10 s.
            recovery = await recovery_seconds(url, pg.url, back, within_s=60.0 if long else 10.0)
            await asyncio.sleep(1.0)
        final = await settle(url, timeout_s=180)
        replay_s = time.monotonic() - back
        rss = peak_rss_mb(proc.pid)
        await stop_gracefully(proc, tmp_path / "collector.log")
    await verify(
        f"pg-down-{down_s:.0f}s-{ack_mode}",
        ledger,
        pg.url,
        journal_peak_bytes=watch.journal_peak,
        rss_peak_mb=rss,
        recovery_s=recovery,
        replay_done_s=replay_s,
        acked_by_end_of_outage=acked_while_down,
        journaled=final["events"]["journaled"],
        replayed=final["events"]["replayed"],
        refused=ledger.refused,
    )
    assert spilled > 0, "the journal never grew while PostgreSQL was down"
    assert rss < RSS_LIMIT_MB, f"the collector's peak RSS was {rss:.0f} MB"


async def kill_mid_replay(proc: Any, url: str, journal_before: int, *, timeout_s: float = 20) -> dict[str, Any] | None:
    """Watch /health closely and kill -9 the collector once its replay has deleted a segment of the
    `journal_before` bytes, and before it has replayed everything; the last /health seen, or None (not killed) if
    the replay finished between two looks."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while True:
            assert time.monotonic() < deadline, f"the replay did not progress within {timeout_s} s"
            try:
                body: dict[str, Any] = (await client.get("/health")).json()
            except httpx.TransportError:
                body = {}
            if body:
                left = body["journal"]["bytes"]
                if left == 0:
                    return None
                if left < journal_before:
                    await kill(proc)
                    return body
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("long", VARIANTS)
async def test_sigkill_during_replay(pg: StoppablePostgres, tmp_path: Path, long: bool) -> None:
    """kill -9 while the journal is being replayed, then restart: the adopted journal is replayed again, and every
    200 is stored exactly once."""
    kills = 3 if long else 1
    build_s = 15.0 if long else 4.0
    # Small segments: a replay takes many steps, each deleting a segment only once all of it is committed.
    env = {"ACK_MODE": "durable", "JOURNAL_SEGMENT_BYTES": str(32 * 1024)}
    port = free_port()
    ledger = Ledger()
    left_at_kills: list[int] = []
    with collector_process(pg.url, tmp_path, port=port, **env) as (proc, url):
        await wait_until_live(proc, url)
        await asyncio.to_thread(pg.stop, "fast")
        async with loading(ledger, url):
            await asyncio.sleep(build_s)
        built = await journal_bytes(url)
        assert built > 0, "no journal was built while PostgreSQL was down"
        await asyncio.to_thread(pg.start)
        seen = await kill_mid_replay(proc, url, built)
        assert seen is not None, "the replay finished before it could be interrupted"
        left_at_kills.append(seen["journal"]["bytes"])
    for _ in range(1, kills):
        # Restarted with PostgreSQL up, the collector adopts what is left and replays it at once: interrupt that
        # too, when it does not finish first.
        with collector_process(pg.url, tmp_path, port=port, **env) as (proc, url):
            await wait_until_live(proc, url)
            seen = await kill_mid_replay(proc, url, left_at_kills[-1])
            if seen is None:
                await stop_gracefully(proc, tmp_path / "collector.log")
                break
            left_at_kills.append(seen["journal"]["bytes"])
    with collector_process(pg.url, tmp_path, port=port, **env) as (proc, url):
        await wait_until_live(proc, url)
        started = time.monotonic()
        final = await settle(url)
        recovery = time.monotonic() - started
        rss = peak_rss_mb(proc.pid)
        await stop_gracefully(proc, tmp_path / "collector.log")
    assert not journal_segments(tmp_path)
    await verify(
        f"sigkill-during-replay-x{kills}",
        ledger,
        pg.url,
        journal_peak_bytes=built,
        rss_peak_mb=rss,
        recovery_s=recovery,
        journal_left_at_kills="/".join(map(str, left_at_kills)),
        final_replayed=final["events"]["replayed"],
        final_deduplicated=final["events"]["deduplicated"],
    )


JOURNAL_FULL_ENV = {
    # Buffered: a small buffer spills once half full, fills the journal, then fills up itself.
    "buffered": {"BUFFER_MAX_EVENTS": "1000", "FLUSH_MAX_EVENTS": "50"},
    # Durable: each connection has one request waiting at a time, so the buffer fills once more connections than
    # it has room for wait: 8 connections (40 events) fit, the 24 more sent during the outage do not.
    "durable": {"BUFFER_MAX_EVENTS": "100", "FLUSH_MAX_EVENTS": "20"},
}


@pytest.mark.parametrize("ack_mode", ["durable", "buffered"])
@pytest.mark.parametrize("long", VARIANTS)
async def test_journal_full_answers_503_and_recovers(
    pg: StoppablePostgres, tmp_path: Path, long: bool, ack_mode: str
) -> None:
    """With PostgreSQL down and the journal at JOURNAL_MAX_BYTES, /collect answers 503 without crashing; once
    PostgreSQL is back everything acknowledged is stored and new events are acknowledged again."""
    down_s = 20.0 if long else 5.0
    max_bytes = 128 * 1024
    env = {
        "ACK_MODE": ack_mode,
        "JOURNAL_MAX_BYTES": str(max_bytes),
        "JOURNAL_SEGMENT_BYTES": str(32 * 1024),
        **JOURNAL_FULL_ENV[ack_mode],
    }
    ledger = Ledger()

    async def full() -> int:
        return ledger.answers["503 buffer_full"]

    def acked_requests() -> int:
        return sum(n for answer, n in ledger.answers.items() if answer.startswith("2"))

    with collector_process(pg.url, tmp_path, **env) as (proc, url):
        await wait_until_live(proc, url)
        watch = HealthWatch(url)
        async with watch.running(), loading(ledger, url), httpx.AsyncClient() as client:
            await asyncio.sleep(1.0)
            assert not await full(), "503 buffer_full before any fault: the test's settings are off"
            await asyncio.to_thread(pg.stop, "fast")
            down_at = time.monotonic()
            stop_extra = asyncio.Event()
            extra = asyncio.create_task(
                ledger.drive(url, stop_extra, connections=24) if ack_mode == "durable" else stop_extra.wait()
            )
            await poll(full, down_s, what="503 buffer_full")
            full_after = time.monotonic() - down_at
            await asyncio.sleep(max(0.0, down_s - full_after))
            assert proc.poll() is None, tail(tmp_path / "collector.log")
            assert (await client.get(f"{url}/livez")).status_code == 200
            answers_when_down = dict(ledger.answers)
            await asyncio.to_thread(pg.start)
            back = time.monotonic()
            stop_extra.set()
            recovery = await recovery_seconds(url, pg.url, back)
            await extra
            acked_when_back = acked_requests()
            await asyncio.sleep(1.5)
            acked_since_back = acked_requests() - acked_when_back
        await settle(url)
        rss = peak_rss_mb(proc.pid)
        await stop_gracefully(proc, tmp_path / "collector.log")
    await verify(
        f"journal-full-{ack_mode}",
        ledger,
        pg.url,
        journal_peak_bytes=watch.journal_peak,
        rss_peak_mb=rss,
        recovery_s=recovery,
        first_503_after_s=full_after,
        answers_until_back=",".join(f"{k.replace(' ', '_')}:{v}" for k, v in sorted(answers_when_down.items())),
        requests_acked_after_back=acked_since_back,
    )
    assert 0 < watch.journal_peak <= max_bytes
    assert acked_since_back > 0, "no request was acknowledged after PostgreSQL came back"


def flusher_state(body: dict[str, Any] | None) -> str:
    if body is None:
        return "no-answer"
    return f"failing={body['flusher']['failing']}/copy_failures={body['flusher']['copy_failures']}"


# A server that stops answering must not hold the flusher: CopyWriter bounds its one-message transaction (and every
# statement) with COPY_TIMEOUT_S, and /health's ping does not wait on the hung server either.
@pytest.mark.parametrize("long", VARIANTS)
async def test_hung_postgres_is_timed_out_and_journaled(pg: StoppablePostgres, tmp_path: Path, long: bool) -> None:
    """PostgreSQL that accepts connections and never answers: durable requests are still acknowledged (journaled)
    within seconds, the flusher keeps retrying, and once it answers again everything is stored."""
    hang_s = 30.0 if long else 6.0
    relay = PgRelay(pg.socket_path)
    relay.start()
    ledger = Ledger()
    try:
        with collector_process(relay.url, tmp_path, ACK_MODE="durable", COPY_TIMEOUT_S="1") as (proc, url):
            await wait_until_live(proc, url)
            watch = HealthWatch(url)
            async with watch.running(), loading(ledger, url):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(relay.hang)
                hung_at = time.monotonic()
                await asyncio.sleep(3.0)  # the statement in flight times out (1 s) and its batch is journaled
                first = await health(url)
                acked_then = len(ledger.acked)
                sent = time.monotonic()
                probe_status, _ = await post_probe(url)
                probe_s = time.monotonic() - sent
                await asyncio.sleep(max(0.0, hang_s - (time.monotonic() - hung_at)))
                second = await health(url)
                acked_while_hung = len(ledger.acked) - acked_then
                await asyncio.to_thread(relay.unhang)
                recovery = await recovery_seconds(url, pg.url, time.monotonic())
                await asyncio.sleep(1.0)
            await settle(url)
            rss = peak_rss_mb(proc.pid)
            await stop_gracefully(proc, tmp_path / "collector.log")
    finally:
        relay.close()
    await verify(
        f"hung-pg-{hang_s:.0f}s-durable",
        ledger,
        pg.url,
        journal_peak_bytes=watch.journal_peak,
        rss_peak_mb=rss,
        recovery_s=recovery,
        probe_status=probe_status,
        probe_ack_s=probe_s,
        acked_while_hung=acked_while_hung,
        health_at_3s=flusher_state(first),
        health_at_end=flusher_state(second),
    )
    log = tail(tmp_path / "collector.log")
    assert probe_status == 200 and probe_s < 5, f"a request during the hang took {probe_s:.1f} s ({probe_status})"
    assert acked_while_hung > 0, f"nothing was acknowledged while PostgreSQL hung\n{log}"
    assert first is not None and second is not None, "GET /health did not answer within 10 s while PostgreSQL hung"
    assert first["flusher"]["failing"] and second["flusher"]["failing"]
    assert second["flusher"]["copy_failures"] > first["flusher"]["copy_failures"], f"the flusher is stuck\n{log}"
