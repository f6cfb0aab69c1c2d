"""CopyWriter: the flusher's own PostgreSQL connection and the binary COPY that stores a batch of records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from collector import copyformat

COPY_TIMEOUT_S = 30.0


class PermanentWriteError(Exception):
    """PostgreSQL refused the rows' content (not a connection problem): retrying the same rows cannot help."""


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class CopyWriter:
    """One connection, opened lazily and reopened after any failure, used only from the flusher's event loop.

    A dedicated connection rather than a pool checkout: a checkout resets the session on release, one
    more round trip per flush.
    """

    def __init__(self, dsn: str, server_settings: dict[str, str]) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._conn: asyncpg.Connection | None = None

    async def copy_events(self, rows: Sequence[bytes]) -> None:
        """Store records (copyformat, in copyformat.COLUMNS order) in one COPY, committed when this returns."""
        conn = self._conn
        if conn is None or conn.is_closed():
            conn = self._conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings)
        try:
            await conn.copy_to_table(
                "events_log",
                source=_one_chunk(copyformat.payload(list(rows))),
                columns=copyformat.COLUMNS,
                format="binary",
                timeout=COPY_TIMEOUT_S,
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise PermanentWriteError(str(exc)) from exc
        except BaseException:
            # After a failed or cancelled COPY the session's state is unknown: start the next one afresh.
            self._conn = None
            conn.terminate()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
