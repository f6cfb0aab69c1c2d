"""The pipeline through the app: /collect → /export/run → /process/run, reported by the status endpoints."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import pytest

from collector.settings import BucketSettings, Settings, SettingsError
from pipeline.formats import decode_events, format_of
from pipeline.objects import S3Store
from tests.conftest import MakeApp
from tests.harness import free_port
from tests.pipeline.conftest import MakeStore, create_bucket


def bucket_settings(moto_url: str, raw: str, processed: str) -> dict[str, Any]:
    keys = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
    return {
        "s3_endpoint_url": moto_url,
        "raw": BucketSettings(bucket=raw, **keys),
        "processed": BucketSettings(bucket=processed, **keys),
    }


async def test_collected_events_are_exported_and_processed_per_client(
    db: asyncpg.Connection,
    running_admin: MakeApp,
    moto_url: str,
    make_store: MakeStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events sent to /collect end up in the raw bucket once, then in per-client processed objects, with log lines."""
    raw_bucket, processed_bucket = f"raw-{uuid.uuid4().hex[:10]}", f"proc-{uuid.uuid4().hex[:10]}"
    await create_bucket(moto_url, raw_bucket)
    await create_bucket(moto_url, processed_bucket)
    app = await running_admin(**bucket_settings(moto_url, raw_bucket, processed_bucket), export_format="ndjson.gz")
    clicks = [{"eventType": "click", "eventData": {"email": "x@y.com", "n": i}} for i in range(12)]
    batch = {"eventType": "batch", "siteId": "acme.com", "sessionId": "s1", "events": clicks}
    assert (await app.post(batch)).status_code == 200
    assert (await app.post({"eventType": "pageview", "siteId": "eu-shop.com"})).status_code == 200
    await app.services.buffer.drain()

    caplog.set_level(logging.INFO)
    exported = await app.client.post("/export/run")
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["events_exported"] == 13 and len(body["objects"]) == 1
    assert f"Successfully uploaded 13 events to raw S3: {body['objects'][0]}" in caplog.text
    status = (await app.client.get("/export/status")).json()
    assert status["pending_events"] == 0 and status["exported_events"] == 13 and status["lag_seconds"] == 0

    processed = await app.client.post("/process/run")
    assert processed.status_code == 200 and processed.json()["events_processed"] == 13
    assert (
        "Successfully uploaded 12 events for client client_acme_corp to processed S3: processed-events/" in caplog.text
    )
    store: S3Store = await make_store(processed_bucket)
    keys = sorted([k async for k in store.list_keys("processed-events/")])
    assert [k.split("/")[1] for k in keys] == ["client_acme_corp", "client_eu_shop"]
    acme = decode_events(format_of(keys[0]), await store.get(keys[0]))
    assert {e["event_data"]["email"] for e in acme} == {"[REDACTED]"}

    pipeline = (await app.client.get("/pipeline/status")).json()
    assert pipeline["process"]["unprocessed_raw_objects"] == 0 and pipeline["export"]["objects"] == 1
    assert pipeline["retention"]["retention_days"] == 7
    config = (await app.client.get("/export/config")).json()
    assert config["raw_store"] == f"s3://{raw_bucket}" and config["format"] == "ndjson.gz"
    assert "testing" not in str(config)


async def test_development_mode_exports_to_a_local_directory(
    db: asyncpg.Connection, running_admin: MakeApp, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Without buckets, /export/run writes under DATA_DIR/objects/raw with the bucket's keys, and logs that folder
    (not S3) as where the events went."""
    caplog.set_level(logging.INFO)
    app = await running_admin()
    assert (await app.post({"eventType": "pageview", "siteId": "acme.com"})).status_code == 200
    await app.services.buffer.drain()
    pipeline, pool = app.services.pipeline, app.services.store.pool
    await pipeline.refresh_lag(pool)
    assert pipeline.stats.oldest_unexported_at is not None and pipeline.stats.oldest_unprocessed_at is None
    body = (await app.client.post("/export/run")).json()
    await pipeline.refresh_lag(pool)
    assert pipeline.stats.oldest_unexported_at is None and pipeline.stats.oldest_unprocessed_at is not None
    path = tmp_path / "data" / "objects" / "raw" / body["objects"][0]
    assert path.is_file()
    raw_dir = tmp_path / "data" / "objects" / "raw"
    assert f"Successfully uploaded 1 events to raw local folder {raw_dir}: {body['objects'][0]}" in caplog.text
    assert "S3" not in "".join(r.getMessage() for r in caplog.records if r.name.startswith("pipeline."))
    assert (await app.client.post("/process/run")).json()["events_processed"] == 1
    clients = [p.name for p in (tmp_path / "data" / "objects" / "processed" / "processed-events").iterdir()]
    assert clients == ["client_acme_corp"]
    scrape = (await app.client.get("/metrics")).text
    assert 'collector_pipeline_runs_total{result="success",stage="export"} 1.0' in scrape
    assert 'collector_pipeline_rows_total{stage="process"} 1.0' in scrape
    assert 'collector_pipeline_last_success_timestamp_seconds{stage="export"}' in scrape


async def test_pipeline_endpoints_need_admin(running: Any) -> None:
    """A non-loopback client without a token cannot trigger or read the pipeline."""
    endpoints = [("POST", "/export/run"), ("GET", "/export/status"), ("GET", "/export/config"),
                 ("POST", "/process/run"), ("GET", "/process/status"), ("GET", "/pipeline/status")]  # fmt: skip
    for method, path in endpoints:
        response = await running.client.request(method, path)
        assert response.status_code == 403, (path, response.text)


async def test_stage_runs_answer_503_when_the_database_is_unreachable(
    db: asyncpg.Connection, running_admin: MakeApp
) -> None:
    """A stage run whose own connection cannot reach PostgreSQL answers 503 database_unavailable with Retry-After,
    never a 500 (export, process and the seed's /cleanup/run alike)."""
    app = await running_admin()
    port = free_port()  # a loopback port nothing listens on: connecting is refused at once
    app.services.pipeline._dsn = f"postgresql://collector@127.0.0.1:{port}/collector"
    for path in ("/export/run", "/process/run", "/cleanup/run"):
        response = await app.client.post(path)
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"] == "database_unavailable" and response.headers["retry-after"] == "5"


async def test_parquet_settings_export_and_process_parquet_through_the_app(
    db: asyncpg.Connection, running_admin: MakeApp, moto_url: str, make_store: MakeStore
) -> None:
    """EXPORT_FORMAT=parquet and PROCESSED_FORMAT=parquet from the environment reach both stages: a parquet raw
    object, then per-client parquet objects under client_id=/date= folders, redacted."""
    env = Settings.from_env({"EXPORT_FORMAT": "parquet", "PROCESSED_FORMAT": "parquet"})
    assert (env.export_format, env.processed_format) == ("parquet", "parquet")
    with pytest.raises(SettingsError, match="PROCESSED_FORMAT"):
        Settings.from_env({"PROCESSED_FORMAT": "csv"})
    raw_bucket, processed_bucket = f"raw-{uuid.uuid4().hex[:10]}", f"proc-{uuid.uuid4().hex[:10]}"
    await create_bucket(moto_url, raw_bucket)
    await create_bucket(moto_url, processed_bucket)
    app = await running_admin(**bucket_settings(moto_url, raw_bucket, processed_bucket), export_format="parquet",
                              processed_format="parquet")  # fmt: skip
    clicks = [{"eventType": "click", "eventData": {"email": "x@y.com", "n": i}} for i in range(5)]
    assert (await app.post({"eventType": "batch", "siteId": "acme.com", "events": clicks})).status_code == 200
    assert (await app.post({"eventType": "pageview", "siteId": "eu-shop.com"})).status_code == 200
    await app.services.buffer.drain()

    exported = (await app.client.post("/export/run")).json()
    processed = (await app.client.post("/process/run")).json()

    assert exported["events_exported"] == 6 and exported["objects"][0].endswith(".parquet")
    assert processed["events_processed"] == 6
    store: S3Store = await make_store(processed_bucket)
    keys = sorted([k async for k in store.list_keys("processed-events/")])
    today = await db.fetchval("SELECT to_char(min(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM events_log")
    assert [k.split("/")[1:3] for k in keys] == [
        ["client_id=client_acme_corp", f"date={today}"], ["client_id=client_eu_shop", f"date={today}"]
    ]  # fmt: skip
    acme = decode_events(format_of(keys[0]), await store.get(keys[0]))
    assert len(acme) == 5 and {e["event_data"]["email"] for e in acme} == {"[REDACTED]"}
