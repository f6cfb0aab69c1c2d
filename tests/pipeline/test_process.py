"""Stage 2 against real PostgreSQL, moto's S3 server and a real pixel-management server."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from collector.ingest.sites import hash_ip
from pipeline.clients import Destination, load_destinations
from pipeline.export import Exporter
from pipeline.formats import FORMATS
from pipeline.privacy import POLICY_VERSION, REDACTED
from pipeline.process import processed_key
from tests.pipeline.conftest import SECRET, MakeProcessor, MakeStore, insert_events, keys_of, read_events
from tests.pixel_management import PixelManagement, site_config


@pytest.fixture(autouse=True)
def clinic(pixel: PixelManagement) -> None:
    """pixel-management also knowing a hipaa client."""
    pixel.domains["hipaa-clinic.com"] = site_config("client_clinic", "hipaa")


async def test_each_client_gets_its_own_object_under_its_privacy_level(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor
) -> None:
    """One raw object with three clients gives three processed objects, each redacted per its client's level."""
    raw, processed = await make_store(), await make_store()
    pii = {"email": "a@b.com", "note": "mail a@b.com", "diagnosis": "E11.9", "page": "home"}
    agent = "Mozilla/5.0 (X11; rv:120.0) Gecko/20100101 Firefox/120.0"
    await insert_events(db, 3, data=pii, ip="198.51.100.7", user_agent=agent)
    await insert_events(db, 2, client_id="client_eu_shop", site_id="eu-shop.com", data=pii, ip="198.51.100.8",
                        user_agent=agent)  # fmt: skip
    await insert_events(db, 1, client_id="client_clinic", site_id="hipaa-clinic.com", data=pii, user_agent=agent,
                        url="https://hipaa-clinic.com/book?email=a%40b.com&slot=3")  # fmt: skip
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    processor = await make_processor(raw, processed)

    result = await processor.run(conn)

    assert result.raw_objects == 1 and result.client_objects == 3 and result.rows == 6
    raw_key = exported.keys[0]
    keys = await keys_of(processed)
    assert keys == sorted(processed_key(raw_key, c) for c in ("client_acme_corp", "client_eu_shop", "client_clinic"))
    standard = await read_events(processed, processed_key(raw_key, "client_acme_corp"))
    assert len(standard) == 3
    assert standard[0]["event_data"] == {**pii, "email": REDACTED}
    assert standard[0]["ip"] == "198.51.100.7" and standard[0]["user_agent"] == agent
    gdpr = await read_events(processed, processed_key(raw_key, "client_eu_shop"))
    assert gdpr[0]["event_data"] == {"email": REDACTED, "note": f"mail {REDACTED}", "diagnosis": "E11.9",
                                     "page": "home"}  # fmt: skip
    assert gdpr[0]["ip"] is None
    assert gdpr[0]["ip_hash"] == hash_ip((SECRET + "salt-client_eu_shop").encode(), "198.51.100.8")
    assert gdpr[0]["user_agent"] == "Firefox"
    hipaa = await read_events(processed, processed_key(raw_key, "client_clinic"))
    assert hipaa[0]["event_data"]["diagnosis"] == REDACTED and "a%40b.com" not in hipaa[0]["url"]
    import orjson

    document = orjson.loads(await processed.get(processed_key(raw_key, "client_clinic")))
    assert document["process_metadata"]["policy_version"] == POLICY_VERSION
    assert document["process_metadata"]["privacy_level"] == "hipaa"
    marked = await db.fetchrow("SELECT processed_at, policy_version FROM raw_objects WHERE key = $1", raw_key)
    assert marked["processed_at"] is not None and marked["policy_version"] == POLICY_VERSION

    again = await processor.run(conn)
    assert again.raw_objects == 0 and await keys_of(processed) == keys


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_event_resent_into_a_later_raw_object_is_processed_once(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor, fmt: str
) -> None:
    """The same event_id in two raw objects (a client retry) appears in the first processed object only."""
    raw, processed = await make_store(), await make_store()
    repeated = [str(uuid.uuid4()) for _ in range(3)]
    await insert_events(db, 3, event_ids=repeated)
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    await insert_events(db, 4, event_ids=[*repeated[:2], str(uuid.uuid4()), str(uuid.uuid4())])
    await insert_events(db, 1, event_ids=[repeated[2]])
    await Exporter(raw, fmt=fmt, batch_size=100).run(conn)
    processor = await make_processor(raw, processed, fmt=fmt)

    result = await processor.run(conn)

    assert result.raw_objects == 2 and result.duplicates == 3
    events = [e for key in await keys_of(processed) for e in await read_events(processed, key)]
    ids = [e["event_id"] for e in events]
    assert len(ids) == 5 and len(set(ids)) == 5


@pytest.mark.parametrize("fmt", FORMATS)
async def test_reprocessing_an_object_after_a_crash_keeps_its_own_events(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_store: MakeStore, make_processor: MakeProcessor, fmt: str
) -> None:
    """If a run died before marking, the re-run writes the same keys with the same events (claims are its own)."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 4)
    await Exporter(raw, fmt=fmt, batch_size=100).run(conn)
    processor = await make_processor(raw, processed, fmt=fmt)
    await processor.run(conn)
    first = {key: await read_events(processed, key) for key in await keys_of(processed)}
    await db.execute("UPDATE raw_objects SET processed_at = NULL")  # as if the run died before its last step

    result = await processor.run(conn)

    assert result.raw_objects == 1 and result.rows == 4 and result.duplicates == 0
    assert {key: await read_events(processed, key) for key in await keys_of(processed)} == first


async def test_pixel_management_down_leaves_the_object_for_the_next_run(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    pixel: PixelManagement,
    make_store: MakeStore,
    make_processor: MakeProcessor,
) -> None:
    """Without a client's privacy level nothing is written for it and the raw object stays unprocessed."""
    raw, processed = await make_store(), await make_store()
    await insert_events(db, 2)
    await Exporter(raw, fmt="json", batch_size=100).run(conn)
    pixel.status = 503
    processor = await make_processor(raw, processed)
    result = await processor.run(conn)
    assert result.raw_objects == 0 and len(result.failed) == 1
    assert await keys_of(processed) == []
    pixel.status = None
    assert (await processor.run(conn)).raw_objects == 1


async def test_a_client_with_its_own_bucket_gets_its_objects_there(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    make_store: MakeStore,
    make_processor: MakeProcessor,
    moto_url: str,
) -> None:
    """A mapping names a client's processed bucket and prefix; the shared bucket gets nothing of that client."""
    from tests.pipeline.conftest import create_bucket

    own_bucket = f"own-{uuid.uuid4().hex[:12]}"
    await create_bucket(moto_url, own_bucket)
    raw, shared = await make_store(), await make_store()
    await insert_events(db, 2)
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    destinations = {"client_acme_corp": Destination(own_bucket, "acme/")}
    processor = await make_processor(raw, shared, destinations)
    await processor.run(conn)
    own = await make_store(own_bucket)
    assert await keys_of(own) == [processed_key(exported.keys[0], "client_acme_corp", "acme/")]
    assert await keys_of(shared) == [processed_key(exported.keys[0], "client_eu_shop")]


def test_client_storage_file_maps_clients_to_their_buckets(tmp_path: Path) -> None:
    """CLIENT_STORAGE_FILE is read into destinations; a file that is not a JSON object is refused by name."""
    good = tmp_path / "storage.json"
    good.write_text('{"client_a": {"processed_bucket": "a-bucket", "processed_prefix": "exports"}, "client_b": null}')
    assert load_destinations(good) == {"client_a": Destination("a-bucket", "exports/")}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="CLIENT_STORAGE_FILE"):
        load_destinations(bad)
