"""The write-behind buffer: when it flushes, what happens when COPY fails, and when it is full."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from tests.conftest import MakeApp, count_rows, wait_for_rows


async def test_flush_by_size(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """With a long interval, reaching FLUSH_MAX_EVENTS alone triggers the flush."""
    running = await make_app(flush_max_events=5, flush_interval_ms=60_000)
    batch = {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "e"}] * 4}
    assert (await running.post(batch)).status_code == 200
    await asyncio.sleep(0.3)
    assert await count_rows(db) == 0, "four events are below the size threshold and the interval is a minute"
    assert (await running.post({"eventType": "fifth", "siteId": "acme.com"})).status_code == 200
    await wait_for_rows(db, 5)


async def test_flush_by_time(make_app: MakeApp, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    """A lone event is flushed FLUSH_INTERVAL_MS after it arrived, with one INFO line for the flush."""
    caplog.set_level(logging.INFO, logger="collector.storage.buffer")
    running = await make_app(flush_max_events=1000, flush_interval_ms=300)
    assert (await running.post({"eventType": "lonely", "siteId": "acme.com"})).status_code == 200
    assert await count_rows(db) == 0
    await wait_for_rows(db, 1)
    assert "Bulk inserted 1 events for 1 client(s) in" in caplog.text


async def test_copy_failure_keeps_the_batch_and_recovers(
    make_app: MakeApp, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """While COPY fails the batch is kept and retried; once the table is back every event is stored once."""
    caplog.set_level(logging.INFO, logger="collector")
    running = await make_app(flush_interval_ms=10)
    await db.execute("ALTER TABLE events_log RENAME TO events_log_away")
    try:
        for i in range(10):
            response = await running.post({"eventType": f"e{i}", "siteId": "acme.com"})
            assert response.status_code == 200
        async with asyncio.timeout(5):
            while running.services.storage.stats.copy_failures < 3:
                await asyncio.sleep(0.02)
        assert running.services.buffer.failing
        assert running.services.buffer.depth == 10
        health = await running.client.get("/health")
        assert health.json()["buffer"]["depth"] == 10
    finally:
        await db.execute("ALTER TABLE events_log_away RENAME TO events_log")
    await wait_for_rows(db, 10, timeout_s=15)
    assert len({r["event_type"] for r in await db.fetch("SELECT event_type FROM events_log")}) == 10
    assert not running.services.buffer.failing
    assert caplog.text.count("failed; retrying") == 1, "one log line per failure streak"
    assert "PostgreSQL is taking events again after" in caplog.text


async def test_full_buffer_answers_503_with_retry_after(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """With PostgreSQL failing and the journal full, a full buffer answers 503 buffer_full; accepted events are kept."""
    running = await make_app(buffer_max_events=3, flush_max_events=3, flush_interval_ms=10, journal_max_bytes=1)
    await db.execute("ALTER TABLE events_log RENAME TO events_log_away")
    try:
        accepted = 0
        refused = None
        for i in range(6):
            response = await running.post({"eventType": f"e{i}", "siteId": "acme.com"})
            if response.status_code == 200:
                accepted += 1
            else:
                refused = response
                break
        assert accepted == 3
        assert refused is not None and refused.status_code == 503
        assert refused.json()["error"] == "buffer_full"
        assert int(refused.headers["retry-after"]) >= 1
        ready = await running.client.get("/readyz")
        assert ready.status_code == 503 and "buffer_full" in ready.json()["reasons"]
    finally:
        await db.execute("ALTER TABLE events_log_away RENAME TO events_log")
    await wait_for_rows(db, 3, timeout_s=15)


async def test_durable_mode_answers_after_the_rows_are_visible(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """In durable mode a 200 means committed: the rows are visible to another connection at once."""
    running = await make_app(ack_mode="durable", flush_interval_ms=5000)
    response = await running.post({"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": "a"}] * 3})
    assert response.status_code == 200
    assert response.json()["message"] == "3 event(s) received and stored"
    assert await count_rows(db) == 3, "a durable answer must not wait for, or run ahead of, the flush"


async def test_durable_requests_share_commits(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """Concurrent durable requests are group-committed: fewer COPYs than requests, every row visible on 200."""
    running = await make_app(ack_mode="durable", flush_interval_ms=5000)
    responses = await asyncio.gather(*(running.post({"eventType": f"e{i}", "siteId": "acme.com"}) for i in range(50)))
    assert {r.status_code for r in responses} == {200}
    assert await count_rows(db) == 50
    assert running.services.buffer.stats.batches < 50


async def test_refuses_new_events_once_closing(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """After close() starts, new events get 503 and what was queued is flushed."""
    running = await make_app(flush_interval_ms=60_000)
    assert (await running.post({"eventType": "before", "siteId": "acme.com"})).status_code == 200
    await running.services.buffer.close()
    response = await running.post({"eventType": "after", "siteId": "acme.com"})
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert [r["event_type"] for r in await db.fetch("SELECT event_type FROM events_log")] == ["before"]
