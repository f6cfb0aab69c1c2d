"""Accounting: per-client daily counts and a capped sample of rejected events, written to PostgreSQL in the background.

The request path only bumps counters in memory and appends samples to a bounded deque; one task writes them every
few seconds (and once more at shutdown), so operators can bill from `client_daily_counts` and site owners can see
in `dead_letters` why their events bounce, without a write per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from collector.ops.periodic import Periodic

logger = logging.getLogger(__name__)

# A dead-letter sample is cut to this many bytes when it is taken (so the pending deque holds at most
# max_pending x ~4.5 KB) and redacted before it is written (by `redact`: pipeline.samples.redact_sample).
PAYLOAD_SAMPLE_BYTES = 4096
DETAIL_CHARS = 500
# Samples kept per (reason, domain) between two flushes: a flood of one mistake needs a few samples, not a
# thousand, and each sample costs its redaction.
SAMPLES_PER_KIND = 10


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    client_id: str | None
    domain: str | None
    detail: str
    payload: str
    received_at: datetime  # when the request was refused (it is written up to a flush interval later)


def sample_payload(value: Any) -> str:
    """A rejected event or body as text, truncated: enough to see what was wrong, never the whole of a huge body."""
    if isinstance(value, bytes):
        text = value[:PAYLOAD_SAMPLE_BYTES].decode("utf-8", errors="replace")
    else:
        try:
            text = orjson.dumps(value)[:PAYLOAD_SAMPLE_BYTES].decode("utf-8", errors="replace")
        except (TypeError, orjson.JSONEncodeError):
            text = repr(value)[:PAYLOAD_SAMPLE_BYTES]
    return text.replace("\x00", "\\u0000")


def _redacted(
    letters: list[DeadLetter], redact: Callable[[str], str]
) -> list[tuple[str, str | None, str | None, str, str, datetime]]:
    return [(d.reason, d.client_id, d.domain, redact(d.detail), redact(d.payload), d.received_at) for d in letters]


class Accounting:
    """Counters per (day, client, metric) and dead-letter samples, flushed every `interval_s` seconds."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        redact: Callable[[str], str],
        interval_s: float = 5.0,
        max_pending: int = 1000,
        keep: int = 10_000,
    ) -> None:
        """`redact` cleans each sample's detail and payload before it is written (the strictest privacy rules)."""
        self._pool = pool
        self._redact = redact
        self._keep = keep
        self.counts: Counter[tuple[date, str, str]] = Counter()
        self.dead_letters: deque[DeadLetter] = deque(maxlen=max_pending)
        self._sampled: Counter[tuple[str, str | None]] = Counter()  # samples taken since the last flush
        self._schedule = Periodic("accounting", interval_s, self.flush)

    def count(self, client_id: str, metric: str, n: int) -> None:
        self.counts[(datetime.now(UTC).date(), client_id, metric)] += n

    def add_counts(self, counts: Counter[tuple[str, str]]) -> None:
        """Add rows per (client, metric) counted elsewhere (the enricher's bot counts, once per batch)."""
        today = datetime.now(UTC).date()
        for (client_id, metric), n in counts.items():
            self.counts[(today, client_id, metric)] += n

    def reject(
        self, reason: str, client_id: str | None, domain: str | None, detail: str, payload: Any, n: int = 1
    ) -> None:
        """Record `n` rejected events (or one request): a count for their client, when known, and one sample
        (unless SAMPLES_PER_KIND of this reason and domain were taken since the last flush)."""
        if client_id is not None:
            self.count(client_id, f"rejected:{reason}", n)
        kind = (reason, domain)
        if self._sampled[kind] >= SAMPLES_PER_KIND:
            return
        self._sampled[kind] += 1
        self.dead_letters.append(
            DeadLetter(reason, client_id, domain, detail[:DETAIL_CHARS], sample_payload(payload), datetime.now(UTC))
        )

    def start(self) -> None:
        self._schedule.start()

    async def close(self) -> None:
        """Stop the schedule, then write what is pending one last time."""
        await self._schedule.close()
        await self.flush()

    async def flush(self) -> None:
        """Write pending counts and samples; on failure keep the counts for the next round (samples may be lost)."""
        counts, self.counts = self.counts, Counter()
        letters = [self.dead_letters.popleft() for _ in range(len(self.dead_letters))]
        self._sampled.clear()
        if not counts and not letters:
            return
        # Redaction runs in a thread, never on the loop that answers /collect.
        rows = await asyncio.to_thread(_redacted, letters, self._redact) if letters else []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if counts:
                    await conn.execute(
                        "INSERT INTO client_daily_counts AS c (day, client_id, metric, count)"
                        " SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[])"
                        " ON CONFLICT (day, client_id, metric) DO UPDATE SET count = c.count + EXCLUDED.count",
                        [k[0] for k in counts], [k[1] for k in counts], [k[2] for k in counts], list(counts.values()),
                    )  # fmt: skip
                if letters:
                    await conn.executemany(
                        "INSERT INTO dead_letters (reason, client_id, domain, detail, payload, received_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6)",
                        rows,
                    )
                    await conn.execute(
                        "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - $1", self._keep
                    )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.counts.update(counts)
            logger.warning("Writing client counts and dead letters failed (will retry): %r", exc)
