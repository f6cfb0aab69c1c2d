"""Issue 11 item 6: one client's bad configuration (or unreachable bucket) fails only that client's objects."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from collector.ingest.auth import PixelManagementDirectory
from pipeline.clients import ClientConfigError, ClientSettingsSource, Destination, load_destinations
from pipeline.export import Exporter
from pipeline.objects import LocalStore, ObjectStore, S3Location, S3Store, check_key
from pipeline.process import Processor, processed_key
from tests.conftest import MakeApp
from tests.harness import free_port
from tests.pipeline.conftest import insert_events, keys_of, read_events
from tests.pixel_management import PixelManagement, site_config

MakeProcessor = Callable[..., Awaitable[Processor]]


@pytest.fixture
def make_processor(directory: PixelManagementDirectory, tmp_path: Path) -> MakeProcessor:
    """Factory: a Processor from `raw` into `processed`, own buckets as directories, settings never cached."""

    async def make(
        raw: ObjectStore,
        processed: ObjectStore,
        destinations: dict[str, Destination | ClientConfigError] | None = None,
        *,
        store_for: Callable[[str], Awaitable[ObjectStore]] | None = None,
        retry_base_s: float = 0.0,
    ) -> Processor:
        async def own_directory(bucket: str) -> ObjectStore:
            return LocalStore(tmp_path / "own" / bucket)

        clients = ClientSettingsSource(
            directory, processed, store_for or own_directory, destinations=destinations, ttl_s=0.001
        )
        return Processor(raw, clients, ip_hash_secret="isolation-test-secret", retry_base_s=retry_base_s)

    return make


async def test_a_client_id_ending_in_a_newline_never_stops_the_other_clients(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    """Rows of client id "evil\\n" (stored before ingest refused it) are dropped and counted; acme is processed."""
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    await insert_events(db, 2, client_id="client_acme_corp")
    await insert_events(db, 3, client_id="client_evil\n", site_id="evil.com")
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    processor = await make_processor(raw, processed)

    result = await processor.run(conn)

    assert result.raw_objects == 1 and result.rows == 2 and result.dropped == {"invalid_client_id": 3}
    assert await keys_of(processed) == [processed_key(exported.keys[0], "client_acme_corp")]
    assert await db.fetchval("SELECT processed_at IS NOT NULL FROM raw_objects") is True


@pytest.mark.parametrize(
    "storage",
    [
        {"processed_prefix": "exports with space/"},
        {"processed_prefix": "exports//daily"},
        {"processed_prefix": "processed-events/client_acme_corp/"},
        {"processed_bucket": "Not A Bucket"},
        {"processed_bucket": "bucket\n"},
        {"processed_prefix": 42},
    ],
)
async def test_a_bad_storage_config_fails_only_that_client_and_is_retried(
    db: asyncpg.Connection,
    conn: asyncpg.Connection,
    pixel: PixelManagement,
    make_processor: MakeProcessor,
    tmp_path: Path,
    storage: dict[str, object],
) -> None:
    """A bad bucket or prefix from pixel-management defers eu-shop's object (never to the shared bucket); acme runs."""
    pixel.domains["eu-shop.com"] = {**site_config("client_eu_shop", "gdpr"), "storage": storage}
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    await insert_events(db, 2, client_id="client_acme_corp")
    await insert_events(db, 3, client_id="client_eu_shop", site_id="eu-shop.com")
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    raw_key = exported.keys[0]
    processor = await make_processor(raw, processed)

    first = await processor.run(conn)

    assert first.raw_objects == 1 and first.rows == 2 and first.deferred == {"client_eu_shop": 1}
    assert await keys_of(processed) == [processed_key(raw_key, "client_acme_corp")]
    assert processor.clients.refused["pixel_management"] >= 1
    waiting = await db.fetch("SELECT raw_key, client_id, attempts FROM processing_retries")
    assert [tuple(r) for r in waiting] == [(raw_key, "client_eu_shop", 1)]

    pixel.domains["eu-shop.com"] = {**site_config("client_eu_shop", "gdpr"), "storage": {"processed_prefix": "eu/"}}
    second = await processor.run(conn)

    assert second.rows == 3 and second.deferred == {}
    assert await read_events(processed, processed_key(raw_key, "client_eu_shop", "eu/")) != []
    assert await db.fetchval("SELECT count(*) FROM processing_retries") == 0


async def test_an_unreachable_client_bucket_is_retried_with_backoff(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    """A client whose own bucket cannot be reached waits with a growing delay; the others are processed and marked."""
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    await insert_events(db, 2, client_id="client_acme_corp")
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    async with AsyncExitStack() as stack:
        attempts: list[str] = []

        async def s3_bucket(bucket: str) -> ObjectStore:
            # An S3 endpoint on a loopback port where nothing listens: every upload fails to connect.
            attempts.append(bucket)
            return await S3Store.open(S3Location(bucket, endpoint_url=f"http://127.0.0.1:{free_port()}",
                                                 region="us-east-1", access_key="k", secret_key="s"),
                                      stack, timeout_s=1.0)  # fmt: skip

        processor = await make_processor(
            raw, processed, {"client_eu_shop": Destination(missing, "")}, store_for=s3_bucket, retry_base_s=60.0
        )

        first = await processor.run(conn)

        assert first.raw_objects == 1 and first.deferred == {"client_eu_shop": 1}
        assert await keys_of(processed) == [processed_key(exported.keys[0], "client_acme_corp")]
        assert await db.fetchval("SELECT processed_at IS NOT NULL FROM raw_objects") is True
        delay = await db.fetchval("SELECT extract(epoch FROM next_attempt_at - now()) FROM processing_retries")
        assert 50 < delay <= 60
        assert (await processor.run(conn)).deferred == {}  # not due yet: the next run leaves it alone
        assert await db.fetchval("SELECT attempts FROM processing_retries") == 1
        # New events meanwhile: acme's are processed; eu-shop's object joins the wait without an attempt.
        await insert_events(db, 1, client_id="client_acme_corp")
        await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
        tried = len(attempts)
        later = await Exporter(raw, fmt="json", batch_size=100).run(conn)
        assert (await processor.run(conn)).deferred == {"client_eu_shop": 1} and len(attempts) == tried
        assert processed_key(later.keys[0], "client_acme_corp") in await keys_of(processed)
        waits = await db.fetch("SELECT attempts, next_attempt_at FROM processing_retries ORDER BY attempts")
        assert [r["attempts"] for r in waits] == [0, 1] and waits[0]["next_attempt_at"] == waits[1]["next_attempt_at"]

        await db.execute("UPDATE processing_retries SET next_attempt_at = now()")
        await processor.run(conn)

        assert len(attempts) == tried + 1  # one attempt for the client: its second object waits on
        rows = await db.fetch(
            "SELECT attempts, extract(epoch FROM next_attempt_at - now()) AS delay, last_error FROM processing_retries"
            " ORDER BY attempts"
        )
        assert [r["attempts"] for r in rows] == [0, 2]
        assert all(110 < r["delay"] <= 120 for r in rows) and missing in rows[1]["last_error"]


def test_no_prefix_or_bucket_can_reach_into_another_area() -> None:
    """Prefixes naming our own areas, paths that climb or double up, and non-S3 bucket names are refused."""
    refused_prefixes = [
        "processed-events/", "processed-events/client_b/", "x/processed-events/", "raw-events/", "../x/", "a/../b/",
        "/abs/", "a//b/", "a b/", "tab\t/", "line\n", ".hidden/", "x" * 300, "ü/",
    ]  # fmt: skip
    for prefix in refused_prefixes:
        with pytest.raises(ClientConfigError):
            Destination.parse({"processed_prefix": prefix}, "test")
    for bucket in ["Upper", "a_b", "ab", "-ab", "ab-", "a..b", "192.168.1.1", "b" * 64, "bucket\n"]:
        with pytest.raises(ClientConfigError):
            Destination.parse({"processed_bucket": bucket}, "test")
    for key in ["processed-events/client_a/x.json\n", "a b", "a//b", "../a"]:
        with pytest.raises(ValueError, match="unsafe object key"):
            check_key(key)
    assert Destination.parse({"processed_bucket": "acme-data.eu", "processed_prefix": "exports/daily"}, "t") == (
        Destination("acme-data.eu", "exports/daily/")
    )


async def test_a_bad_client_storage_file_entry_fails_only_that_client(
    db: asyncpg.Connection, conn: asyncpg.Connection, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    """One bad CLIENT_STORAGE_FILE entry is refused; its client waits (never written to the shared bucket)."""
    mapping = tmp_path / "storage.json"
    mapping.write_text(json.dumps({
        "client_acme_corp": {"processed_prefix": "acme/"},
        "client_eu_shop": {"processed_prefix": "eu shop//"},
        "client\nforged": {"processed_prefix": "x/"},
    }))  # fmt: skip
    destinations = load_destinations(mapping)
    assert destinations["client_acme_corp"] == Destination(None, "acme/")
    assert isinstance(destinations["client_eu_shop"], ClientConfigError)
    assert isinstance(destinations["client\nforged"], ClientConfigError)
    raw, processed = LocalStore(tmp_path / "raw"), LocalStore(tmp_path / "processed")
    await insert_events(db, 1, client_id="client_acme_corp")
    await insert_events(db, 1, client_id="client_eu_shop", site_id="eu-shop.com")
    exported = await Exporter(raw, fmt="json", batch_size=100).run(conn)
    processor = await make_processor(raw, processed, destinations)

    result = await processor.run(conn)

    assert result.deferred == {"client_eu_shop": 1}
    assert await keys_of(processed) == [processed_key(exported.keys[0], "client_acme_corp", "acme/")]
    assert processor.clients.refused["storage_file"] == 2


async def test_process_run_stays_200_and_status_and_metrics_show_the_failing_client(
    db: asyncpg.Connection, pixel: PixelManagement, running_admin: MakeApp
) -> None:
    """Through the app: /process/run answers 200 "partial", /process/status and /metrics name the waiting client."""
    pixel.domains["eu-shop.com"] = {**site_config("client_eu_shop", "gdpr"), "storage": {"processed_prefix": "a b//"}}
    app = await running_admin()
    assert (await app.post({"eventType": "pageview", "siteId": "acme.com"})).status_code == 200
    assert (await app.post({"eventType": "pageview", "siteId": "eu-shop.com"})).status_code == 200
    await app.services.buffer.drain()
    assert (await app.client.post("/export/run")).status_code == 200

    for _ in range(2):  # and again: a restart or the next cycle does not turn it into a failure for everyone
        response = await app.client.post("/process/run")
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"  # the second run had nothing due: the failing client waits its backoff
    status = (await app.client.get("/process/status")).json()
    assert status["unprocessed_raw_objects"] == 0 and status["processed_events"] == 1
    assert [c["client_id"] for c in status["failing_clients"]] == ["client_eu_shop"]
    assert status["failing_clients"][0]["objects"] == 1 and "processed_prefix" in status["failing_clients"][0]["error"]
    await app.services.pipeline.refresh_lag(app.services.store.pool)
    scrape = (await app.client.get("/metrics")).text
    assert "collector_pipeline_retry_objects 1.0" in scrape
    assert "collector_pipeline_failing_clients 1.0" in scrape
    assert 'collector_pipeline_client_config_refused_total{source="pixel_management"} 1.0' in scrape
    assert 'collector_pipeline_client_failures_total{reason="config"} 1.0' in scrape
