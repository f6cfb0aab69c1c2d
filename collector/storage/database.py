"""EventStore: the asyncpg pool, schema migrations, daily partitions and read queries."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg
import orjson

from collector.storage.copyformat import JSONB_VERSION
from collector.storage.writer import CopyWriter

logger = logging.getLogger(__name__)

# One key for every schema change across workers and instances; an arbitrary constant of ours.
SCHEMA_LOCK_KEY = 0x636F6C6C_6563_7401
PARTITION_DAYS_AHEAD = 2
BATCH_IDS_KEPT_DAYS = 7
# Admin and maintenance queries: a hung server must not hold a request (or a schema migration) forever.
QUERY_TIMEOUT_S = 60.0


def _encode_jsonb(value: Any) -> bytes:
    return JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(value: bytes) -> Any:
    return orjson.loads(value[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every packaged migration, in order."""
    found = []
    for entry in resources.files("collector.storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class EventStore:
    """The schema and every query but the flusher's COPY (see CopyWriter, which it hands out)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, server_settings: dict[str, str]) -> None:
        self.pool = pool
        self._dsn = dsn
        self._server_settings = server_settings

    def copy_writer(self, *, timeout_s: float) -> CopyWriter:
        """A COPY writer on the same database with the same session settings (e.g. synchronous_commit)."""
        return CopyWriter(self._dsn, self._server_settings, timeout_s=timeout_s)

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int, max_size: int, durable: bool, connect_timeout_s: float = 30.0
    ) -> EventStore:
        """Connect (retrying while PostgreSQL starts, up to `connect_timeout_s` seconds) and migrate the schema."""
        server_settings = {"application_name": "collection-api"}
        if durable:
            # A durable acknowledgement promises the commit reached disk, whatever the server default.
            server_settings["synchronous_commit"] = "on"
        deadline = asyncio.get_running_loop().time() + connect_timeout_s
        delay = 0.2
        while True:
            try:
                pool = await asyncpg.create_pool(
                    dsn, min_size=min_size, max_size=max_size, init=_init_connection, server_settings=server_settings,
                    command_timeout=QUERY_TIMEOUT_S,
                )  # fmt: skip
                break
            except (OSError, asyncpg.PostgresError) as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                logger.warning("PostgreSQL not reachable yet (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        store = cls(pool, dsn, server_settings)
        try:
            await store.migrate()
            await store.ensure_partitions(datetime.now(UTC).date())
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> None:
        """Apply packaged migrations not yet applied, under an advisory lock so workers do not race."""
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for version, name, sql in migrations():
                    if version in applied:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                        )
                    logger.info("Applied schema migration %s", name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)

    async def ensure_partitions(self, today: date) -> list[str]:
        """Create the daily partitions from `today` to PARTITION_DAYS_AHEAD days on; return those created."""
        created = []
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
            try:
                for offset in range(PARTITION_DAYS_AHEAD + 1):
                    day = today + timedelta(days=offset)
                    name = f"events_log_p{day:%Y%m%d}"
                    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                        continue
                    start, end = day.isoformat(), (day + timedelta(days=1)).isoformat()
                    await conn.execute(
                        f"CREATE TABLE {name} PARTITION OF events_log"
                        f" FOR VALUES FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00')"
                    )
                    created.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
        if created:
            logger.info("Created partitions %s", ", ".join(created))
        return created

    async def prune_batches(self, keep_days: int = BATCH_IDS_KEPT_DAYS) -> int:
        """Forget batch ids older than `keep_days`: a journal older than that would be replayed without dedup."""
        status = await self.pool.execute(
            "DELETE FROM ingest_batches WHERE committed_at < now() - make_interval(days => $1)", keep_days
        )
        return int(status.split()[-1])

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True if a connection answers a trivial query within `timeout_s` seconds; never waits much longer.

        A connection that did not answer is terminated rather than released: releasing it would wait, with no
        limit, for a cancel request a hung server never answers.
        """
        # InternalClientError: a connection left mid-operation when the server shut down under it ("cannot switch
        # to state ..."); it says the database is not usable now, and /health must answer that, never a 500.
        errors = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
        try:
            conn = await self.pool.acquire(timeout=timeout_s)
        except errors:
            return False
        ok = False
        try:
            await conn.fetchval("SELECT 1", timeout=timeout_s)
            ok = True
        except errors:
            _terminate(conn)
        finally:  # also when the request is cancelled: the connection goes back either way
            try:
                await self.pool.release(conn, timeout=timeout_s)
            except errors:
                _terminate(conn)
        return ok

    def pool_stats(self) -> tuple[int, int, int, int]:
        """(open, in use, max, waiting) connections of the pool, for the metrics."""
        pool = self.pool
        size, idle = pool.get_size(), pool.get_idle_size()
        # asyncpg counts no waiters; the tasks blocked on its free-connection queue are them.
        waiting = len(getattr(getattr(pool, "_queue", None), "_getters", ()))
        return size, size - idle, pool.get_max_size(), waiting

    async def count(self, client_id: str | None) -> int:
        """Rows stored (all clients, or one): from the flusher's per-client daily counts, not a scan of events_log."""
        value = await self.pool.fetchval(
            "SELECT coalesce(sum(count), 0) FROM client_daily_counts"
            " WHERE metric = 'stored' AND ($1::text IS NULL OR client_id = $1)",
            client_id,
        )
        return int(value)

    async def client_counts(self, client_id: str, days: int) -> list[asyncpg.Record]:
        """One client's counts per day and metric ('stored', 'accepted', 'rejected:<reason>'), newest day first."""
        return await self.pool.fetch(
            "SELECT day, metric, count FROM client_daily_counts"
            " WHERE client_id = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int ORDER BY day DESC, metric",
            client_id,
            days,
        )

    async def dead_letters(
        self, limit: int, *, reason: str | None, client_id: str | None, domain: str | None
    ) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT id, received_at, reason, client_id, domain, detail, payload FROM dead_letters"
            " WHERE ($2::text IS NULL OR reason = $2) AND ($3::text IS NULL OR client_id = $3)"
            " AND ($4::text IS NULL OR domain = $4) ORDER BY id DESC LIMIT $1",
            limit, reason, client_id, domain,
        )  # fmt: skip

    async def recent(self, limit: int, client_id: str | None) -> list[asyncpg.Record]:
        columns = (
            "event_id, event_type, event_data, session_id, visitor_id, site_id, url, path, referrer, event_timestamp,"
            " client_id, received_at"
        )
        if client_id is None:
            return await self.pool.fetch(f"SELECT {columns} FROM events_log ORDER BY id DESC LIMIT $1", limit)
        return await self.pool.fetch(
            f"SELECT {columns} FROM events_log WHERE client_id = $1 ORDER BY id DESC LIMIT $2", client_id, limit
        )


def _terminate(conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
    """Close a pool connection at once. When the server went away mid-operation, asyncpg may already have detached
    the proxy from its connection (InterfaceError), and the pool closes that connection itself."""
    with suppress(asyncpg.InterfaceError):
        conn.terminate()
