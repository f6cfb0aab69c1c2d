"""Pipeline fixtures: moto's S3 server on loopback, buckets, a dedicated connection, and rows written like ingest."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import aioboto3
import asyncpg
import orjson
import pytest

from collector.ingest.auth import PixelManagementDirectory
from pipeline.clients import ClientSettingsSource, Destination
from pipeline.formats import decode_events, format_of
from pipeline.objects import ObjectStore, S3Location, S3Store
from pipeline.process import Processor

REGION = "us-east-1"
SECRET = "pipeline-test-secret"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's S3 server in a thread on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def location(bucket: str, endpoint: str) -> S3Location:
    return S3Location(bucket, endpoint_url=endpoint, region=REGION, access_key="testing", secret_key="testing")


async def create_bucket(endpoint: str, bucket: str) -> None:
    session = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    async with session.client("s3", endpoint_url=endpoint) as client:
        await client.create_bucket(Bucket=bucket)


MakeStore = Callable[..., Awaitable[S3Store]]


@pytest.fixture
async def make_store(moto_url: str) -> AsyncIterator[MakeStore]:
    """Factory: an S3Store on a new moto bucket (or on `endpoint`, e.g. one where nothing listens)."""
    async with AsyncExitStack() as stack:

        async def make(bucket: str | None = None, *, endpoint: str | None = None) -> S3Store:
            name = bucket or f"test-{uuid.uuid4().hex[:16]}"
            if bucket is None and endpoint is None:
                await create_bucket(moto_url, name)
            return await S3Store.open(location(name, endpoint or moto_url), stack, timeout_s=2.0)

        yield make


MakeProcessor = Callable[..., Awaitable[Processor]]


@pytest.fixture
def make_processor(directory: PixelManagementDirectory, make_store: MakeStore) -> MakeProcessor:
    """Factory: a Processor reading `raw`, writing `fmt` to `processed` (or a client's own bucket when mapped)."""

    async def make(
        raw: ObjectStore,
        processed: ObjectStore,
        destinations: dict[str, Destination] | None = None,
        *,
        fmt: str = "json",
        max_attempts: int = 10,
    ) -> Processor:
        opened: dict[str, S3Store] = {}

        async def store_for(bucket: str) -> ObjectStore:
            if bucket not in opened:
                opened[bucket] = await make_store(bucket)
            return opened[bucket]

        clients = ClientSettingsSource(directory, processed, store_for, destinations=destinations)
        return Processor(raw, clients, ip_hash_secret=SECRET, fmt=fmt, max_attempts=max_attempts)

    return make


async def insert_events(
    db: asyncpg.Connection,
    count: int,
    *,
    client_id: str = "client_acme_corp",
    site_id: str = "acme.com",
    data: dict[str, Any] | None = None,
    event_ids: list[str] | None = None,
    received_at: datetime | None = None,
    ip: str | None = None,
    ip_hash: str | None = None,
    user_agent: str | None = None,
    url: str | None = None,
    referrer: str | None = None,
) -> list[int]:
    """Insert `count` rows the way CopyWriter does (transaction id first, then row ids); their ids."""
    ids = event_ids or [str(uuid.uuid4()) for _ in range(count)]
    when = received_at or datetime.now(UTC)
    async with db.transaction():
        await db.fetchval("SELECT pg_current_xact_id()")
        records = await db.fetch(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, event_timestamp, received_at,"
            " event_data, ip, ip_hash, user_agent, url, referrer)"
            " SELECT e, 'pageview', $2, $3, $4, $4, $5::text::jsonb, $6::inet, $7, $8, $9, $10"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS u(e, n) ORDER BY n RETURNING id",
            ids, site_id, client_id, when, None if data is None else orjson.dumps(data).decode(),
            ip, ip_hash, user_agent, url, referrer,
        )  # fmt: skip
    return sorted(r["id"] for r in records)


async def read_events(store: Any, key: str) -> list[dict[str, Any]]:
    return decode_events(format_of(key), await store.get(key))


async def keys_of(store: Any, prefix: str = "") -> list[str]:
    return sorted([key async for key in store.list_keys(prefix)])
