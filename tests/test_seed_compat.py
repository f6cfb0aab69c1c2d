"""The seed service's names where they cost nothing: its SQL through the `seed` schema, `GET /`, `/cleanup/*`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from collector import __version__
from collector.storage.database import EventStore
from tests.conftest import MakeApp, Running
from tests.pipeline.conftest import insert_events
from tests.pipeline.test_retention import make_partition

# The seed README's troubleshooting queries, verbatim ("Bulk Insert Not Working" and "Performance Issues").
SEED_RECENT_BY_CLIENT = """
SELECT client_id, COUNT(*), MIN(created_at), MAX(created_at) 
FROM events_log 
WHERE created_at > NOW() - INTERVAL '1 hour' 
GROUP BY client_id;"""
# Not valid SQL on any PostgreSQL: pg_stat_user_tables names its columns relname, not tablename.
SEED_TABLE_STATS = """
SELECT schemaname, tablename, n_tup_ins, n_tup_upd, n_tup_del 
FROM pg_stat_user_tables 
WHERE tablename = 'events_log';"""
# What docs/migrating.md gives instead: the same figures, summed over the day partitions.
TABLE_STATS = """
SELECT sum(n_tup_ins) AS n_tup_ins, sum(n_tup_upd) AS n_tup_upd, sum(n_tup_del) AS n_tup_del
FROM pg_stat_user_tables
WHERE relname LIKE 'events\\_log\\_%';"""


@pytest.fixture
async def migrated(database_url: str, db: asyncpg.Connection) -> asyncpg.Connection:
    """The test database with every packaged migration applied and events_log emptied."""
    store = await EventStore.open(database_url, min_size=1, max_size=1, durable=False)
    await store.close()
    await db.execute("TRUNCATE events_log RESTART IDENTITY")
    return db


@pytest.fixture
async def seed_conn(database_url: str, migrated: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the seed's SQL would open it, with the search path docs/migrating.md gives."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "seed, public"})
    yield conn
    await conn.close()


async def test_seed_troubleshooting_query_runs_unchanged_against_the_seed_view(
    migrated: asyncpg.Connection, seed_conn: asyncpg.Connection
) -> None:
    """The seed's per-client query (FROM events_log, created_at) runs as written and counts each client's rows."""
    await insert_events(migrated, 3, client_id="client_acme_corp", site_id="acme.com")
    await insert_events(migrated, 2, client_id="client_eu_shop", site_id="eu-shop.com")
    await insert_events(
        migrated, 1, client_id="client_old", site_id="old.com", received_at=datetime.now(UTC) - timedelta(hours=2)
    )

    rows = await seed_conn.fetch(SEED_RECENT_BY_CLIENT)

    assert {r["client_id"]: r["count"] for r in rows} == {"client_acme_corp": 3, "client_eu_shop": 2}
    assert all(r["min"] <= r["max"] for r in rows)


async def test_seed_view_carries_the_seed_column_names_and_values(
    migrated: asyncpg.Connection, seed_conn: asyncpg.Connection
) -> None:
    """created_at, timestamp, ip_address and raw_event_data hold the receive time, event time, IP and payload."""
    [row_id] = await insert_events(
        migrated, 1, data={"plan": "pro"}, ip="203.0.113.7", url="https://acme.com/a?b=1", referrer="https://r.org/"
    )
    await migrated.execute(
        "UPDATE events_log SET session_id = 's1', visitor_id = 'v1', path = '/a', event_timestamp = $1,"
        " extra = '{\"campaign\": \"x\"}' WHERE id = $2",
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), row_id,
    )  # fmt: skip
    stored = await migrated.fetchrow("SELECT * FROM events_log WHERE id = $1", row_id)

    seed = await seed_conn.fetchrow(
        "SELECT id, event_type, timestamp, session_id, visitor_id, site_id, client_id, url, path, referrer,"
        " user_agent, ip_address, event_data, raw_event_data, created_at FROM events_log"
    )

    assert seed is not None and stored is not None
    assert seed["id"] == row_id and seed["event_type"] == "pageview"
    assert seed["timestamp"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert seed["created_at"] == stored["received_at"]
    assert seed["ip_address"] == "203.0.113.7"
    assert (seed["session_id"], seed["visitor_id"], seed["site_id"], seed["client_id"]) == (
        "s1", "v1", "acme.com", "client_acme_corp",
    )  # fmt: skip
    assert seed["event_data"] == '{"plan": "pro"}'
    raw = seed["raw_event_data"]
    for fragment in ('"eventType": "pageview"', '"sessionId": "s1"', '"siteId": "acme.com"', '"campaign": "x"',
                     '"eventData": {"plan": "pro"}', '"url": "https://acme.com/a?b=1"', '"path": "/a"'):  # fmt: skip
        assert fragment in raw, raw


async def test_a_role_with_the_seed_search_path_reads_the_view_and_cannot_write(
    database_url: str, migrated: asyncpg.Connection
) -> None:
    """A dashboard role set up as docs/migrating.md says finds the seed's events_log by default, read-only."""
    role = f"seed_reader_{uuid.uuid4().hex[:8]}"
    await insert_events(migrated, 2)
    await migrated.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await migrated.execute(f"GRANT USAGE ON SCHEMA seed TO {role}")
        await migrated.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA seed TO {role}")
        await migrated.execute(f"ALTER ROLE {role} SET search_path = seed, public")
        reader = await asyncpg.connect(database_url, user=role)
        try:
            assert await reader.fetchval("SELECT count(created_at) FROM events_log") == 2
            with pytest.raises(asyncpg.PostgresError):
                await reader.execute("DELETE FROM events_log")
        finally:
            await reader.close()
    finally:
        await migrated.execute(f"DROP OWNED BY {role}")
        await migrated.execute(f"DROP ROLE {role}")
    assert await migrated.fetchval("SELECT count(*) FROM events_log") == 2


async def test_seed_table_statistics_query_is_invalid_sql_and_the_documented_one_runs(
    seed_conn: asyncpg.Connection,
) -> None:
    """The seed's pg_stat_user_tables query names a column PostgreSQL lacks; the guide's replacement answers."""
    with pytest.raises(asyncpg.UndefinedColumnError):
        await seed_conn.fetch(SEED_TABLE_STATS)
    row = await seed_conn.fetchrow(TABLE_STATS)
    assert row is not None and set(row.keys()) == {"n_tup_ins", "n_tup_upd", "n_tup_del"}


async def test_the_collector_itself_still_writes_the_table_not_the_view(
    running: Running, migrated: asyncpg.Connection
) -> None:
    """The seed schema changes nothing for the collector: its events land in public.events_log."""
    response = await running.post({"eventType": "pageview", "siteId": "acme.com"})
    assert response.status_code == 200, response.text
    await running.services.buffer.drain()
    assert await migrated.fetchval("SELECT count(*) FROM public.events_log") == 1
    assert await migrated.fetchval("SELECT count(*) FROM seed.events_log") == 1


async def test_root_answers_200_with_name_version_and_links_to_anyone(running: Running) -> None:
    """GET / (what load balancers probe by default) answers 200 with the service, its version and its links."""
    response = await running.client.get("/")

    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "collection-api" and body["version"] == __version__
    assert body["links"]["health"] == "/health" and body["links"]["collect"] == "/collect"
    assert body["links"]["openapi"] == "/openapi.json" and body["links"]["tracker"] == "/s.js"
    assert (await running.client.head("/")).status_code == 200


async def test_cleanup_endpoints_are_admin_only(running: Running) -> None:
    """/cleanup/status and /cleanup/run refuse a client that is not an operator, like the pipeline endpoints."""
    assert (await running.client.get("/cleanup/status")).status_code == 403
    assert (await running.client.post("/cleanup/run")).status_code == 403


async def test_cleanup_status_and_run_map_onto_retention(running_admin: MakeApp, migrated: asyncpg.Connection) -> None:
    """An expired, exported partition is listed by /cleanup/status and dropped by /cleanup/run; unexported stays."""
    app = await running_admin(retention_days=7)
    today = datetime.now(UTC).date()
    exported_day, unexported_day = today - timedelta(days=12), today - timedelta(days=11)
    exported = await make_partition(migrated, exported_day)
    unexported = await make_partition(migrated, unexported_day)
    ids = await insert_events(migrated, 3, received_at=datetime.combine(exported_day, datetime.min.time(), UTC))
    await migrated.execute("UPDATE export_state SET watermark = $1", max(ids))
    await insert_events(migrated, 2, received_at=datetime.combine(unexported_day, datetime.min.time(), UTC))
    try:
        status = await app.client.get("/cleanup/status")
        assert status.status_code == 200, status.text
        body = status.json()
        assert body["retention_days"] == 7 and body["cutoff"] == (today - timedelta(days=7)).isoformat()
        assert body["expired_partitions"] == [exported, unexported]

        run = await app.client.post("/cleanup/run")

        assert run.status_code == 200, run.text
        assert run.json()["dropped"] == [exported] and run.json()["kept_unexported"] == [unexported]
        assert await migrated.fetchval("SELECT count(*) FROM events_log") == 2
        after = (await app.client.get("/cleanup/status")).json()
        assert after["expired_partitions"] == [unexported] and after["last_run"]["dropped"] == [exported]
    finally:
        for name in (exported, unexported):
            await migrated.execute(f"DROP TABLE IF EXISTS {name}")
