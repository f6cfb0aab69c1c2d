"""CopyWriter: storage's own PostgreSQL connection and the transaction that stores one batch exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import asyncpg

from collector.storage import copyformat
from collector.storage.batch import Batch


def _claim_script(batch_id: bytes, rows: int, clients: dict[str, int]) -> str:
    """BEGIN, then claim the batch id (a unique violation if it was committed before: the caller rolls back) and
    count the rows per client; the COPY and COMMIT follow (_COPY_AND_COMMIT). A simple-query script: every value is
    ours (hex, integers, client ids validated at authorization), quoted all the same."""
    statements = [
        "BEGIN",
        f"INSERT INTO ingest_batches (batch_id, row_count) VALUES ('\\x{batch_id.hex()}'::bytea, {int(rows)})",
    ]
    if clients:
        values = ", ".join(
            f"((now() AT TIME ZONE 'UTC')::date, '{client.replace(chr(39), chr(39) * 2)}', 'stored', {int(n)})"
            for client, n in clients.items()
        )
        statements.append(
            f"INSERT INTO client_daily_counts AS c (day, client_id, metric, count) VALUES {values}"
            " ON CONFLICT (day, client_id, metric) DO UPDATE SET count = c.count + EXCLUDED.count"
        )
    return ";\n".join(statements)


# The rest of one batch's transaction, after the claim: the rows, then the commit. PostgreSQL runs the statements
# of a simple query one after the other, and a COPY FROM STDIN among them reads its data in turn; asyncpg sends the
# data and CopyDone right behind the query without waiting for CopyInResponse. So the whole transaction (BEGIN, the
# claim, the counts, the COPY, COMMIT) is one message and one round trip, where it was four (script, COPY's two,
# COMMIT): a durable request waits for every one, each a wake of storage's thread on a busy machine. If a
# statement fails, PostgreSQL runs none after it and ignores the copy data that follows (protocol: CopyData outside
# COPY is dropped), and the transaction is left aborted for the caller's ROLLBACK.
_COPY_AND_COMMIT = "COPY events_log ({}) FROM STDIN (FORMAT binary);\nCOMMIT".format(
    ", ".join(f'"{column}"' for column in copyformat.COLUMNS)
)


# The same for several batches at once (journal replay): returns the ids that were new; only their rows are copied.
_CLAIM_BATCHES = """
INSERT INTO ingest_batches (batch_id, row_count) SELECT * FROM unnest($1::bytea[], $2::int[])
ON CONFLICT (batch_id) DO NOTHING
RETURNING batch_id
"""
_COUNT_STORED = """
INSERT INTO client_daily_counts AS c (day, client_id, metric, count)
SELECT (now() AT TIME ZONE 'UTC')::date, client, 'stored', n FROM unnest($1::text[], $2::bigint[]) AS u(client, n)
ON CONFLICT (day, client_id, metric) DO UPDATE SET count = c.count + EXCLUDED.count
"""


class PermanentWriteError(Exception):
    """PostgreSQL refused the rows' content (not a connection problem): retrying the same rows cannot help."""


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class CopyWriter:
    """One connection, opened lazily and reopened after any failure, used only from storage's event loop.

    A dedicated connection rather than a pool checkout: a checkout resets the session on release, one
    more round trip per flush.
    """

    def __init__(self, dsn: str, server_settings: dict[str, str], *, timeout_s: float) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def copy_batch(self, batch: Batch) -> bool:
        """Store the batch's records (copyformat) in one committed transaction; False if its id was stored before.

        Raises PermanentWriteError when PostgreSQL refuses the content, anything else when it could not answer
        (within `timeout_s` seconds per statement: a hung server must not hang the flusher).
        """
        conn = await self._connection()
        script = _claim_script(batch.batch_id, len(batch.rows), batch.clients) + ";\n" + _COPY_AND_COMMIT
        try:
            async with asyncio.timeout(self._timeout * 4):
                try:
                    # A memoryview: asyncpg takes bytes for a file path. Its _copy_in is the public copy_to_table's
                    # body, with the statement ours (the pinned asyncpg is tested through it: tests/collector/storage).
                    data = memoryview(copyformat.payload(list(batch.rows)))
                    await conn._copy_in(script, data, self._timeout)  # type: ignore[attr-defined]
                except asyncpg.UniqueViolationError as exc:
                    await conn.execute("ROLLBACK", timeout=self._timeout)
                    if exc.table_name == "ingest_batches":
                        return False  # committed before: a retry after a lost answer, or a replay
                    raise PermanentWriteError(str(exc)) from exc
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                    await conn.execute("ROLLBACK", timeout=self._timeout)
                    raise PermanentWriteError(str(exc)) from exc
        except PermanentWriteError:
            raise
        except BaseException:
            # After a failed or cancelled statement the session's state is unknown: start the next one afresh.
            self._conn = None
            conn.terminate()
            raise
        return True

    async def copy_batches(self, batches: Sequence[Batch]) -> set[bytes]:
        """Store several batches in one transaction (journal replay: records are small, round trips are not);
        return the ids that were new. Raises like copy_batch."""
        conn = await self._connection()
        try:
            async with asyncio.timeout(self._timeout * 4), conn.transaction():
                claimed_rows = await conn.fetch(
                    _CLAIM_BATCHES, [b.batch_id for b in batches], [len(b.rows) for b in batches], timeout=self._timeout
                )
                claimed = {r["batch_id"] for r in claimed_rows}
                new = [b for b in batches if b.batch_id in claimed]
                if new:
                    clients: dict[str, int] = {}
                    for batch in new:
                        for client, n in batch.clients.items():
                            clients[client] = clients.get(client, 0) + n
                    await conn.execute(_COUNT_STORED, list(clients), list(clients.values()), timeout=self._timeout)
                    await self._copy_rows(conn, [row for b in new for row in b.rows])
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise PermanentWriteError(str(exc)) from exc
        except BaseException:
            self._conn = None
            conn.terminate()
            raise
        return claimed

    async def _copy_rows(self, conn: asyncpg.Connection, rows: list[bytes]) -> None:
        await conn.copy_to_table(
            "events_log",
            source=_one_chunk(copyformat.payload(rows)),
            columns=copyformat.COLUMNS,
            format="binary",
            timeout=self._timeout,
        )

    async def _connection(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is None or conn.is_closed():
            # command_timeout also bounds what asyncpg sends on its own (BEGIN, COMMIT): a hung server must not
            # hold the flusher on any statement.
            conn = self._conn = await asyncpg.connect(
                self._dsn, server_settings=self._server_settings, timeout=self._timeout, command_timeout=self._timeout
            )
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
