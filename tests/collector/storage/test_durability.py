"""Durability in-process: journaling while PostgreSQL fails, replay, exactly-once batches, accounting."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest

from collector.ingest.events import EventParser, RequestContext
from collector.ingest.payload import parse_body
from collector.storage.batch import Batch
from collector.storage.database import EventStore
from collector.storage.journal import Journal
from collector.storage.spill import Storage
from collector.storage.writer import PermanentWriteError
from tests.conftest import MakeApp, count_rows, wait_for_rows


def records(n: int, session: str = "s") -> list[bytes]:
    """n COPY records for client_acme_corp, as ingest builds them."""
    parser = EventParser(max_events_per_request=500, max_event_bytes=32768)
    payload = parse_body(
        b'{"eventType":"batch","siteId":"acme.com","sessionId":"'
        + session.encode()
        + b'","events":['
        + b",".join(b'{"eventType":"e%d"}' % i for i in range(n))
        + b"]}"
    )
    events = parser.events_of(payload)
    ctx = RequestContext.build("acme.com", "client_acme_corp", "agent", "192.0.2.1", None)
    rows, rejected = parser.rows(payload, events, ctx)
    assert not rejected
    return rows


async def test_durable_requests_are_journaled_while_postgres_fails_then_replayed(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """With COPY failing, durable requests still get 200 (fsync'd to the journal); once PostgreSQL takes rows
    again the journal is replayed and every event is stored exactly once."""
    running = await make_app(ack_mode="durable")
    await db.execute("ALTER TABLE events_log RENAME TO events_log_away")
    try:
        ids = [str(uuid.uuid4()) for _ in range(30)]
        responses = await asyncio.gather(
            *(running.post({"eventType": "e", "eventId": i, "siteId": "acme.com"}) for i in ids)
        )
        assert {r.status_code for r in responses} == {200}
        health = (await running.client.get("/health")).json()
        assert health["events"]["journaled"] == 30 and health["journal"]["bytes"] > 0
        assert health["flusher"]["failing"] is True
    finally:
        await db.execute("ALTER TABLE events_log_away RENAME TO events_log")
    await wait_for_rows(db, 30)
    stored = {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events_log")}
    assert stored == set(ids)
    async with asyncio.timeout(10):
        while (health := (await running.client.get("/health")).json())["journal"]["bytes"]:
            await asyncio.sleep(0.05)
    events = health["events"]
    assert events["replayed"] == 30 and events["accepted"] == 30
    assert events["accepted"] == events["stored"] + events["journaled"] + events["buffered"]


async def test_a_batch_committed_before_is_not_stored_again(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Replaying a journal record whose batch already committed (a crash between commit and segment deletion)
    stores nothing twice and is counted as deduplicated."""
    store = await EventStore.open(database_url, min_size=1, max_size=2, durable=True)
    storage = Storage(
        [store.copy_writer(timeout_s=5)], tmp_path / "journal", journal_max_bytes=1 << 20,
        journal_segment_bytes=1 << 16, retry_initial_s=0.01, retry_max_s=0.1,
    )  # fmt: skip
    batch = Batch(os.urandom(16), records(5), {"client_acme_corp": 5})
    try:
        await storage.start()
        try:
            await storage.write(batch)
            assert storage.journal is not None and storage.stats.stored == 5
            storage.journal.append(batch)  # what a crash between the commit and the segment's deletion leaves
        finally:
            await storage.close(replay_s=10)  # a close replays what it can of the journal within its budget
        assert storage.journal_bytes == 0
        assert storage.stats.deduplicated == 5
        assert await count_rows(db) == 5
        stored = await db.fetchval(
            "SELECT count FROM client_daily_counts WHERE client_id = 'client_acme_corp' AND metric = 'stored'"
        )
        assert stored == 5, "the per-client count is kept in the COPY's transaction, so it is not doubled either"
    finally:
        await store.close()


async def test_a_journal_left_by_a_dead_worker_is_replayed_at_startup(
    make_app: MakeApp, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Segments in a journal folder whose worker died are adopted by the next worker and stored."""
    dead = Journal(tmp_path / "data" / "journal", max_bytes=1 << 20, segment_bytes=1 << 16)
    dead.append(Batch(os.urandom(16), records(7, "left-behind"), {"client_acme_corp": 7}))
    dead._close_active()
    os.close(dead._lock_fd)  # what a SIGKILL leaves: the files, and the lock released
    running = await make_app()
    await wait_for_rows(db, 7)
    assert {r["session_id"] for r in await db.fetch("SELECT session_id FROM events_log")} == {"left-behind"}
    assert not dead.dir.exists()
    async with asyncio.timeout(5):
        while (await running.client.get("/health")).json()["journal"]["bytes"]:
            await asyncio.sleep(0.05)


async def test_client_retries_are_deduplicated_downstream(running_admin: MakeApp, db: asyncpg.Connection) -> None:
    """The same eventId sent twice is stored twice in events_log and read once from events_unique."""
    running = await running_admin()
    event = {"eventType": "pageview", "eventId": str(uuid.uuid4()), "siteId": "acme.com"}
    for _ in range(2):
        assert (await running.post(event)).status_code == 200
    await running.services.buffer.drain()
    assert await count_rows(db) == 2
    assert await db.fetchval("SELECT count(*) FROM events_unique") == 1


async def test_per_client_counts_and_dead_letters_add_up(running_admin: MakeApp, db: asyncpg.Connection) -> None:
    """Accepted, stored and rejected-by-reason figures per client add up, and rejected events are sampled."""
    running = await running_admin()
    batch = {
        "eventType": "batch", "siteId": "acme.com",
        "events": [{"eventType": "ok"}, {"eventType": "ok"}, {"eventData": {"no": "type"}}],
    }  # fmt: skip
    assert (await running.post(batch)).status_code == 200
    assert (await running.post({"eventType": "x", "siteId": "stranger.net"})).status_code == 403
    assert (
        await running.client.post("/collect", content=b"{oops", headers={"content-type": "text/plain"})
    ).status_code == 400
    await running.services.buffer.drain()
    await running.services.accounting.flush()
    body = (await running.client.get("/events/count", params={"client_id": "client_acme_corp"})).json()
    assert body["total_events"] == 2
    [today] = body["days"]
    assert (today["accepted"], today["stored"], today["rejected"], today["received"]) == (2, 2, {"invalid_event": 1}, 3)
    letters = (await running.client.get("/dead-letters", params={"limit": 10})).json()
    assert {(d["reason"], d["client_id"], d["domain"]) for d in letters} == {
        ("invalid_event", "client_acme_corp", "acme.com"),
        ("domain_not_authorized", None, "stranger.net"),
        ("invalid_json", None, None),
    }
    assert any('"no":"type"' in d["payload"] for d in letters)
    only = (await running.client.get("/dead-letters", params={"reason": "invalid_json"})).json()
    assert [d["payload"] for d in only] == ["{oops"]


async def test_replay_is_not_starved_by_steady_load(make_app: MakeApp, db: asyncpg.Connection, tmp_path: Path) -> None:
    """An adopted journal is replayed while live events keep arriving, not only when the buffer is idle."""
    dead = Journal(tmp_path / "data" / "journal", max_bytes=1 << 22, segment_bytes=1 << 14)
    for _ in range(20):
        dead.append(Batch(os.urandom(16), records(50, "left-behind"), {"client_acme_corp": 50}))
    dead._close_active()
    os.close(dead._lock_fd)
    running = await make_app(flush_interval_ms=200)
    sent = 0
    async with asyncio.timeout(20):
        while (await running.client.get("/health")).json()["journal"]["bytes"]:
            assert (await running.post({"eventType": "live", "siteId": "acme.com"})).status_code == 200
            sent += 1
    assert sent > 0, "the load was running while the journal drained"
    await running.services.buffer.drain()
    assert await db.fetchval("SELECT count(*) FROM events_log WHERE session_id = 'left-behind'") == 1000
    assert await db.fetchval("SELECT count(*) FROM events_log WHERE event_type = 'live'") == sent


async def test_old_batch_ids_are_pruned(database_url: str, db: asyncpg.Connection) -> None:
    """Batch ids older than the kept days are deleted; recent ones stay (they guard replays)."""
    store = await EventStore.open(database_url, min_size=1, max_size=1, durable=False)
    try:
        await db.execute(
            "INSERT INTO ingest_batches (batch_id, row_count, committed_at) VALUES"
            " ('\\x01'::bytea, 1, now() - interval '8 days'), ('\\x02'::bytea, 1, now() - interval '1 day')"
        )
        assert await store.prune_batches(keep_days=7) == 1
        assert await db.fetchval("SELECT count(*) FROM ingest_batches") == 1
    finally:
        await store.close()


async def test_a_batch_commits_in_one_transaction_once_and_a_refused_one_leaves_nothing(
    database_url: str, db: asyncpg.Connection
) -> None:
    """CopyWriter sends BEGIN, the claim, the counts, the COPY and COMMIT as one message: a batch stores its rows,
    claim and count together; the same batch again stores nothing (False); a batch PostgreSQL refuses raises
    PermanentWriteError with nothing of it kept; and the connection serves the next batch after each."""
    store = await EventStore.open(database_url, min_size=1, max_size=2, durable=True)
    writer = store.copy_writer(timeout_s=5)
    stored_count = "SELECT count FROM client_daily_counts WHERE client_id = 'client_acme_corp' AND metric = 'stored'"
    try:
        first = Batch(os.urandom(16), records(3), {"client_acme_corp": 3})
        assert await writer.copy_batch(first) is True
        assert await writer.copy_batch(first) is False
        assert await count_rows(db) == 3 and await db.fetchval(stored_count) == 3
        # Invalid UTF-8 in the first event's type (a text field): PostgreSQL refuses the COPY mid-transaction.
        poisoned = records(2, session="p")
        poisoned[0] = poisoned[0].replace(b"\x00\x00\x00\x02e0", b"\x00\x00\x00\x02\xff\xfe", 1)
        refused = Batch(os.urandom(16), poisoned, {"client_acme_corp": 2})
        with pytest.raises(PermanentWriteError):
            await writer.copy_batch(refused)
        claimed = await db.fetchval("SELECT count(*) FROM ingest_batches WHERE batch_id = $1", refused.batch_id)
        assert claimed == 0 and await count_rows(db) == 3 and await db.fetchval(stored_count) == 3
        assert await writer.copy_batch(Batch(os.urandom(16), records(4, session="n"), {"client_acme_corp": 4}))
        assert await count_rows(db) == 7 and await db.fetchval(stored_count) == 7
    finally:
        await writer.close()
        await store.close()
