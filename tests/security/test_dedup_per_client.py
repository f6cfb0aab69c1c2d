"""Issue 11 item 7: processed-output duplicate removal is keyed on (client, event id), never on the id alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from collector.ingest.auth import PixelManagementDirectory
from pipeline.clients import ClientSettingsSource
from pipeline.export import Exporter
from pipeline.objects import LocalStore, ObjectStore
from pipeline.process import Processor, processed_key
from tests.pipeline.conftest import insert_events, keys_of, read_events
from tests.pixel_management import PixelManagement

ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def processor(pixel: PixelManagement, tmp_path: Path) -> AsyncIterator[Processor]:
    directory = PixelManagementDirectory(pixel.url, timeout_s=2.0)

    async def no_own_buckets(bucket: str) -> ObjectStore:
        raise AssertionError(bucket)

    clients = ClientSettingsSource(directory, LocalStore(tmp_path / "processed"), no_own_buckets)
    yield Processor(LocalStore(tmp_path / "raw"), clients, ip_hash_secret="dedup-test-secret")
    await directory.close()


async def test_another_clients_event_id_does_not_remove_the_victims_event(
    db: asyncpg.Connection, conn: asyncpg.Connection, processor: Processor
) -> None:
    """An attacker sending the victim's event id (and the all-zero UUID) under its own site costs the victim nothing."""
    victim_id = str(uuid.uuid4())
    exporter = Exporter(processor.raw, fmt="json", batch_size=100)
    # The attacker gets there first, in an earlier raw object and in the same one.
    await insert_events(db, 2, client_id="client_eu_shop", site_id="eu-shop.com", event_ids=[victim_id, ZERO])
    await exporter.run(conn)
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com", event_ids=[str(uuid.uuid4())])
    await insert_events(db, 2, client_id="client_acme_corp", event_ids=[victim_id, ZERO])
    second = (await exporter.run(conn)).keys[0]

    result = await processor.run(conn)

    victim = await read_events(processor.clients.default_store, processed_key(second, "client_acme_corp"))
    assert sorted(e["event_id"] for e in victim) == sorted([victim_id, ZERO])
    assert result.duplicates == 0 and result.rows == 5


async def test_a_clients_own_resend_is_still_removed(
    db: asyncpg.Connection, conn: asyncpg.Connection, processor: Processor
) -> None:
    """The same client sending the same event id twice (a retried beacon) still gets it once."""
    repeated = str(uuid.uuid4())
    exporter = Exporter(processor.raw, fmt="json", batch_size=100)
    await insert_events(db, 2, event_ids=[repeated, repeated])
    await exporter.run(conn)
    await insert_events(db, 1, event_ids=[repeated])
    await exporter.run(conn)

    result = await processor.run(conn)

    events = [e for k in await keys_of(processor.clients.default_store) for e in await read_events(
        processor.clients.default_store, k)]  # fmt: skip
    assert [e["event_id"] for e in events] == [repeated] and result.duplicates == 2


async def test_the_events_unique_view_keeps_each_clients_event(
    db: asyncpg.Connection, conn: asyncpg.Connection
) -> None:
    """Readers' events_unique view keeps the victim's row when another client stored the same event id first."""
    shared = str(uuid.uuid4())
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com", event_ids=[shared])
    await insert_events(db, 2, client_id="client_acme_corp", event_ids=[shared, shared])

    rows = await db.fetch("SELECT client_id FROM events_unique WHERE event_id = $1 ORDER BY client_id", shared)

    assert [r["client_id"] for r in rows] == ["client_acme_corp", "client_eu_shop"]
