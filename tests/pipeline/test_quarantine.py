"""Processing that keeps going: failing objects back off and, after PROCESS_MAX_ATTEMPTS, are quarantined."""

from __future__ import annotations

import uuid

import asyncpg

from pipeline.clients import Destination
from pipeline.export import Exporter
from pipeline.status import process_status, quarantine_counts
from tests.pipeline.conftest import MakeProcessor, MakeStore, insert_events


async def let_the_delays_pass(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE raw_objects SET process_next_at = now() WHERE process_next_at IS NOT NULL")
    await conn.execute("UPDATE processing_retries SET next_attempt_at = now()")


async def test_a_poison_raw_object_backs_off_then_is_quarantined_while_the_others_proceed(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor
) -> None:
    """An unreadable raw object waits a growing delay between attempts, is left alone after the third, and is
    listed in /process/status; the object exported after it is processed on the first run."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 2)
    poison = (await Exporter(raw, fmt="json", batch_size=100).run(conn)).keys[0]
    await raw.put(poison, b"{not json", "application/json")
    await insert_events(db, 3)
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    processor = await make_processor(raw, processed, max_attempts=3)

    first = await processor.run(conn)
    assert first.failed == [poison] and first.raw_objects == 1
    row = await conn.fetchrow(
        "SELECT process_attempts, process_next_at > now() AS later, quarantined_at FROM raw_objects WHERE key = $1",
        poison,
    )
    assert (row["process_attempts"], row["later"], row["quarantined_at"]) == (1, True, None)
    assert (await processor.run(conn)).failed == []  # backing off: the next run leaves it
    for _ in range(2):
        await let_the_delays_pass(conn)
        assert (await processor.run(conn)).failed == [poison]
    await let_the_delays_pass(conn)
    assert (await processor.run(conn)).failed == []  # quarantined: never tried again
    status = await process_status(conn)
    assert [(q["key"], q["attempts"]) for q in status["quarantined_raw_objects"]] == [(poison, 3)]
    assert status["quarantined_raw_objects"][0]["error"]  # the last failure, for the operator
    assert await quarantine_counts(conn) == (1, 0)


async def test_a_client_failing_past_its_attempts_is_quarantined_with_its_newer_objects(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor
) -> None:
    """A client whose bucket does not exist is quarantined after three attempts; its next object joins the
    quarantine without an attempt, and the other client's objects are written every time."""
    raw, shared = await make_store(), await make_store()
    missing = {"client_acme_corp": Destination(f"missing-{uuid.uuid4().hex[:12]}", "")}
    processor = await make_processor(raw, shared, missing, max_attempts=3)
    await insert_events(db, 2)
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    first = await processor.run(conn)
    assert first.deferred == {"client_acme_corp": 1} and first.client_objects == 1
    for _ in range(2):
        await let_the_delays_pass(conn)
        assert (await processor.run(conn)).deferred == {"client_acme_corp": 1}
    assert await quarantine_counts(conn) == (0, 1)

    await insert_events(db, 1)
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    later = await processor.run(conn)
    assert later.client_objects == 1  # eu-shop's object of the new raw object
    waiting = await conn.fetch("SELECT attempts, quarantined_at FROM processing_retries ORDER BY attempts")
    assert [(r["attempts"], r["quarantined_at"] is not None) for r in waiting] == [(0, True), (3, True)]
    await let_the_delays_pass(conn)
    assert (await processor.run(conn)).deferred == {}  # nothing of the quarantined client is tried
    failing = (await process_status(conn))["failing_clients"]
    assert [(c["client_id"], c["quarantined_objects"]) for c in failing] == [("client_acme_corp", 2)]
