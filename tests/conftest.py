"""Shared fixtures: a real PostgreSQL, a real pixel-management server, and app factories."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from collector.app import CollectorApp, create_app
from collector.ingest.auth import PixelManagementDirectory
from collector.services import Services
from collector.settings import Settings
from collector.storage.database import EventStore
from tests.pixel_management import PixelManagement, site_config


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """TEST_DATABASE_URL when given, else an embedded PostgreSQL started for this test session."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    from collector.ops.embedded import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="collector-test-") as data_dir, embedded_postgres(data_dir) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database, with events_log and the pipeline's tables emptied before the test."""
    conn = await asyncpg.connect(database_url)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if await conn.fetchval("SELECT to_regclass('events_log') IS NOT NULL"):
        await conn.execute("TRUNCATE events_log RESTART IDENTITY")
    if await conn.fetchval("SELECT to_regclass('raw_objects') IS NOT NULL"):
        await conn.execute("TRUNCATE processed_objects, processed_event_ids, raw_objects, pipeline_runs CASCADE")
        await conn.execute("UPDATE export_state SET watermark = 0")
    if await conn.fetchval("SELECT to_regclass('ingest_batches') IS NOT NULL"):
        await conn.execute("TRUNCATE ingest_batches, client_daily_counts, dead_letters")
    yield conn
    await conn.close()


@pytest.fixture
async def schema(database_url: str) -> None:
    """The packaged migrations applied (any test may run first, before an app has migrated)."""
    store = await EventStore.open(database_url, min_size=1, max_size=1, durable=False)
    await store.close()


@pytest.fixture
async def conn(database_url: str, schema: None, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A second connection, as a stage runner holds (after `db` emptied the tables)."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def pixel() -> AsyncIterator[PixelManagement]:
    """pixel-management on a loopback port, knowing acme.com (standard) and eu-shop.com (gdpr)."""
    server = PixelManagement()
    server.domains["acme.com"] = site_config("client_acme_corp")
    server.domains["shop.acme.com"] = site_config("client_acme_corp")
    server.domains["eu-shop.com"] = site_config("client_eu_shop", "gdpr")
    server.domains["no-ip.com"] = site_config("client_no_ip", ip_enabled=False)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def directory(pixel: PixelManagement) -> AsyncIterator[PixelManagementDirectory]:
    """The pixel-management directory (over HTTP) that processing asks for client settings."""
    directory = PixelManagementDirectory(pixel.url, timeout_s=2.0)
    yield directory
    await directory.close()


@pytest.fixture
async def shop(pixel: PixelManagement) -> AsyncIterator[PixelManagement]:
    """pixel-management also knowing shop.test, the site the browser tests' pages are served as."""
    pixel.domains["shop.test"] = site_config("client_browser_shop")
    yield pixel


async def count_rows(db: asyncpg.Connection) -> int:
    """Rows in events_log."""
    return int(await db.fetchval("SELECT count(*) FROM events_log"))


async def wait_for_rows(db: asyncpg.Connection, expected: int, timeout_s: float = 15.0) -> None:
    """Poll until events_log holds `expected` rows (flushes and replays happen in the background)."""
    async with asyncio.timeout(timeout_s):
        while await count_rows(db) != expected:
            await asyncio.sleep(0.02)


@dataclasses.dataclass
class Running:
    """A collector app with its lifespan running, and an HTTP client talking to it in-process."""

    app: CollectorApp
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        return self.app.services

    async def post(self, payload: Any, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/collect", json=payload, **kwargs)


MakeApp = Callable[..., Awaitable[Running]]


@pytest.fixture
async def make_app(
    database_url: str, pixel: PixelManagement, db: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[MakeApp]:
    """Factory: start a collector (real PostgreSQL, real pixel-management) with settings overrides; stopped after."""
    async with AsyncExitStack() as stack:

        async def make(client_host: str = "203.0.113.7", **overrides: Any) -> Running:
            defaults: dict[str, Any] = {
                "database_url": database_url,
                "pixel_management_url": pixel.url,
                "database_pool_size": 2,
                "database_max_overflow": 2,
                "flush_interval_ms": 20,
                "ip_hash_secret": "test-secret",
                "drain_timeout_s": 5.0,
                "data_dir": str(tmp_path / "data"),
            }
            settings = Settings(**{**defaults, **overrides})
            settings.check()
            app = create_app(settings)
            await stack.enter_async_context(app.starlette.router.lifespan_context(app.starlette))
            transport = httpx.ASGITransport(app=app, client=(client_host, 51000))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://collector")
            )
            return Running(app, client)

        yield make


@pytest.fixture
async def running(make_app: MakeApp) -> Running:
    """A collector with default test settings."""
    return await make_app()


@pytest.fixture
def running_admin(make_app: MakeApp) -> MakeApp:
    """Factory: a collector whose in-process client is on loopback, so admin endpoints answer it."""

    async def make(**overrides: Any) -> Running:
        return await make_app(client_host="127.0.0.1", **overrides)

    return make
