"""WriteBehindBuffer: the bounded in-memory queue of accepted events and the flusher that drains it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from collector.errors import BufferFull, ShuttingDown
from collector.store import PermanentWriteError

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]
BACKLOG_FACTOR = 10


class Sink(Protocol):
    """Where flushed rows go; copy_events() returns once they are committed."""

    async def copy_events(self, rows: Sequence[Row]) -> None: ...


@dataclass(slots=True)
class _Item:
    """One request's rows: a buffer item per request, not per event, keeps the hot path cheap."""

    rows: Sequence[Row]
    client_id: str | None
    enqueued_at: float
    done: asyncio.Future[None] | None


@dataclass(slots=True)
class BufferStats:
    batches: int = 0
    rows: int = 0
    failures: int = 0
    dropped_unstorable: int = 0
    lost_on_close: int = 0


class WriteBehindBuffer:
    """Bounded queue + one flusher task writing to a Sink with COPY.

    A flush starts when `flush_max_events` are waiting, `flush_interval_s` after the oldest waiting
    event, or at once when a durable request waits on it (group commit). A failed write keeps its
    batch and retries with backoff; nothing is dropped because the database hiccuped.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_events: int,
        flush_max_events: int,
        flush_interval_s: float,
        drain_timeout_s: float,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
    ) -> None:
        self._sink = sink
        self.capacity = max_events
        self._flush_max = flush_max_events
        self._interval = flush_interval_s
        self._drain_timeout = drain_timeout_s
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._queue: deque[_Item] = deque()
        self._queued = 0  # events in _queue
        self._writing = 0  # events taken by the flusher, not yet committed
        self._waiters = 0  # items in _queue that a request awaits
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self.stats = BufferStats()

    @property
    def depth(self) -> int:
        """Events held only in memory: queued plus the batch being written."""
        return self._queued + self._writing

    @property
    def accepting(self) -> bool:
        return not self._closing

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="flusher")

    def put(self, rows: Sequence[Row], client_id: str | None) -> None:
        """Queue a request's rows; raise BufferFull or ShuttingDown (both 503) when they cannot be kept."""
        self._enqueue(rows, client_id, None)

    async def put_and_wait(self, rows: Sequence[Row], client_id: str | None) -> None:
        """Queue rows and return once they are committed (durable mode)."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue(rows, client_id, done)
        await done

    def _enqueue(self, rows: Sequence[Row], client_id: str | None, done: asyncio.Future[None] | None) -> None:
        if self._closing:
            raise ShuttingDown("the collector is shutting down; send again shortly")
        n = len(rows)
        if self._queued + self._writing + n > self.capacity:
            raise BufferFull(f"the buffer holds {self.depth} of {self.capacity} events; send again shortly")
        self._queue.append(_Item(rows, client_id, time.monotonic(), done))
        self._queued += n
        if done is not None:
            self._waiters += 1
            self._wakeup.set()
        elif len(self._queue) == 1 or self._queued >= self._flush_max:
            self._wakeup.set()

    async def drain(self) -> None:
        """Flush everything queued now and wait until it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append(_Item((), None, time.monotonic(), done))
        self._waiters += 1
        self._wakeup.set()
        await done

    async def close(self) -> None:
        """Refuse new events, flush what is queued within the drain timeout, then log what was and was not kept."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(self._drain_timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                self._abandon()
        logger.info(
            "flusher stopped: batches=%d rows=%d lost=%d",
            self.stats.batches, self.stats.rows, self.stats.lost_on_close,
        )  # fmt: skip

    def _abandon(self) -> None:
        lost = self.depth
        self.stats.lost_on_close += lost
        for item in self._queue:
            if item.done is not None and not item.done.done():
                item.done.set_exception(ShuttingDown("the collector stopped before these events were stored"))
        self._queue.clear()
        self._queued = self._writing = self._waiters = 0
        if lost:
            logger.error("flusher: %d buffered events could not be stored before the drain timeout", lost)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not (self._closing or self._waiters or self._queued >= self._flush_max):
                delay = self._queue[0].enqueued_at + self._interval - time.monotonic()
                if delay > 0:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                    continue
            await self._flush(self._take())

    def _take(self) -> list[_Item]:
        # Behind a backlog one COPY takes up to BACKLOG_FACTOR thresholds' worth: per row, a large COPY is
        # cheaper, and each COPY's round trips wait behind the requests on the event loop.
        limit = self._flush_max * BACKLOG_FACTOR
        items: list[_Item] = []
        taken = 0
        while self._queue and taken < limit:
            item = self._queue.popleft()
            items.append(item)
            taken += len(item.rows)
            if item.done is not None:
                self._waiters -= 1
        self._queued -= taken
        self._writing = taken
        return items

    async def _flush(self, items: list[_Item]) -> None:
        rows: list[Row] = []
        for item in items:
            rows.extend(item.rows)
        started = time.perf_counter()
        if rows:
            await self._write_until_stored(rows)
            self.stats.batches += 1
            self.stats.rows += len(rows)
            clients = len({item.client_id for item in items if item.rows})
            logger.info(
                "Bulk inserted %d events for %d client(s) in %.1f ms",
                len(rows), clients, (time.perf_counter() - started) * 1000,
            )  # fmt: skip
        self._writing = 0
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)

    async def _write_until_stored(self, rows: list[Row]) -> None:
        delay = self._retry_initial
        streak = 0
        while True:
            try:
                await self._write_isolating_bad_rows(rows)
            except Exception as exc:  # any failure but cancellation: keep the batch and retry
                streak += 1
                self.stats.failures += 1
                self.failing = True
                if streak == 1:
                    logger.warning("Bulk insert of %d events failed, retrying with backoff: %r", len(rows), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            if streak:
                logger.warning("Bulk insert recovered after %d failed attempt(s)", streak)
            self.failing = False
            return

    async def _write_isolating_bad_rows(self, rows: list[Row]) -> None:
        try:
            await self._sink.copy_events(rows)
        except PermanentWriteError as exc:
            # Validation should make this unreachable; if a row still poisons its batch, split the batch
            # so that only that row is dropped (and counted) instead of blocking every batch behind it.
            if len(rows) == 1:
                self.stats.dropped_unstorable += 1
                logger.error("Dropped 1 event PostgreSQL refused to store: %s", exc)
                return
            middle = len(rows) // 2
            await self._write_isolating_bad_rows(rows[:middle])
            await self._write_isolating_bad_rows(rows[middle:])
