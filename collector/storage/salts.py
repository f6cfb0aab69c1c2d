"""VisitorSalts: the daily random salts of cookieless visitor ids, shared by every worker through PostgreSQL.

One salt per UTC day in `visitor_salts`; each refresh makes sure today's and tomorrow's exist (tomorrow's ahead of
time, so that no request at midnight finds none) and deletes older ones: once a day is over its salt is gone, and
nobody (an operator included) can recompute a visitor id of that day from an address and a user agent.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import date

import asyncpg

from collector.ops.periodic import Periodic

logger = logging.getLogger(__name__)

DAY_S = 86400
_ENSURE = """
INSERT INTO visitor_salts (day, salt)
SELECT d, s FROM unnest($1::date[], $2::bytea[]) AS u(d, s)
ON CONFLICT (day) DO NOTHING
"""


class VisitorSalts:
    """Today's salt in memory (`today()` is on the request path: a dict lookup); refreshed every `interval_s`."""

    def __init__(self, pool: asyncpg.Pool, *, interval_s: float = 300.0) -> None:
        self._pool = pool
        self._salts: dict[int, bytes] = {}  # by day number since the Unix epoch (UTC)
        self._schedule = Periodic("Visitor salt rotation", interval_s, self.refresh)

    def today(self) -> bytes | None:
        """Today's salt, or None if none could be read yet (then no cookieless id is derived)."""
        return self._salts.get(int(time.time() // DAY_S))

    async def start(self) -> None:
        """Read (or create) today's and tomorrow's salts, then keep them current in the background."""
        try:
            await self.refresh()
        except (OSError, asyncpg.PostgresError):
            logger.exception("Reading the visitor salts failed; retrying in the background")
        self._schedule.start()

    async def close(self) -> None:
        await self._schedule.close()

    async def refresh(self) -> None:
        day = int(time.time() // DAY_S)
        async with self._pool.acquire() as conn, conn.transaction():
            days = [_date(day), _date(day + 1)]
            await conn.execute(_ENSURE, days, [secrets.token_bytes(32) for _ in days])
            await conn.execute("DELETE FROM visitor_salts WHERE day < $1", days[0])
            rows = await conn.fetch("SELECT day, salt FROM visitor_salts WHERE day >= $1", days[0])
        self._salts = {int(r["day"].toordinal() - _EPOCH_ORDINAL): bytes(r["salt"]) for r in rows}


def _date(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
