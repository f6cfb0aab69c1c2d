"""WriteBehindBuffer: the bounded in-memory queue of accepted events, and the flush task that hands its batches on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from collector.errors import BufferFull, ShuttingDown
from collector.storage.batch import Batch, Flow

logger = logging.getLogger(__name__)

Row = bytes  # one events_log record in binary COPY format (collector.storage.copyformat)
BACKLOG_FACTOR = 10


class Sink(Protocol):
    """Where batches go (collector.storage.spill.Storage, or an in-memory stand-in in tests)."""

    async def write(self, batch: Batch) -> None:
        """Return once the batch's rows are committed or journaled; raise only when cancelled."""
        ...


@dataclass(slots=True)
class _Item:
    """One request's rows: an item per request, not per event, keeps the hot path cheap."""

    rows: Sequence[Row]
    size: int  # bytes of the rows
    client_id: str | None
    done: asyncio.Future[None] | None  # set once the rows are stored
    enrich: object = None  # what storage's enricher needs of the request (collector.enrich.policy.EnrichRequest)


@dataclass(slots=True)
class BufferStats:
    batches: int = 0
    rows: int = 0
    lost_on_close: int = 0


class WriteBehindBuffer:
    """Bounded queue filled by request handlers, drained by a flush task writing batches to a Sink.

    Everything here runs on the request loop, so no lock: the sink takes the batch to its own loop (Storage
    does) when the work is slow. A flush starts when `flush_max_events` are waiting, `flush_interval_s` after
    the first event of an idle queue, or at once when a durable request waits on it (group commit); up to
    `concurrency` flushes are in flight at once (the sink should have as many connections). The sink keeps a
    batch it cannot store yet; nothing is dropped because the database hiccuped.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_events: int,
        max_bytes: int,
        flush_max_events: int,
        flush_interval_s: float,
        drain_timeout_s: float,
        spill_at: float = 0.5,
        on_flush: Callable[[int, float], None] | None = None,
        flow: Flow | None = None,
        concurrency: int = 1,
    ) -> None:
        self._sink = sink
        self._concurrency = concurrency
        self._on_flush = on_flush  # (events, seconds) once per flush: per batch, never per request
        self.capacity = max_events
        self.max_bytes = max_bytes
        self._flush_max = flush_max_events
        self._interval = flush_interval_s
        self._drain_timeout = drain_timeout_s
        # While PostgreSQL fails, batches stay in memory (and are retried) until the buffer is this full.
        self._high_water = int(max_events * spill_at)
        self._high_water_bytes = int(max_bytes * spill_at)
        self.flow = Flow() if flow is None else flow  # `spill` is ours to write, `failing` the sink's
        self._queue: deque[_Item] = deque()
        self._queued = 0  # events in _queue
        self._depth = 0  # events in _queue or in the batches being written
        self._bytes = 0  # bytes of the rows queued or being written
        self._waiters = 0  # items in _queue that a request awaits
        self._first_at = 0.0  # when the first item of a drained queue came (time.monotonic)
        self._flushing: dict[asyncio.Task[None], list[_Item]] = {}  # each flush in flight, with its items
        self._closing = False
        self._wakeup: asyncio.Future[None] | None = None  # set while the flush task waits for work
        self._task: asyncio.Task[None] | None = None
        self.stats = BufferStats()

    @property
    def failing(self) -> bool:
        return self.flow.failing

    @property
    def depth(self) -> int:
        """Events held only in memory: queued plus the batches being written."""
        return self._depth

    @property
    def bytes(self) -> int:
        """Bytes of the rows held only in memory."""
        return self._bytes

    @property
    def accepting(self) -> bool:
        return not self._closing

    async def start(self) -> None:
        """Start the flush task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="flusher")

    def put(self, rows: Sequence[Row], client_id: str | None, size: int | None = None, enrich: object = None) -> None:
        """Queue a request's rows (`size`: their bytes, when the caller has counted them already; `enrich`: what
        storage's enricher needs of the request); raise BufferFull or ShuttingDown (both 503) when they cannot be
        kept."""
        self._enqueue(rows, client_id, None, size, enrich)

    def put_waiting(
        self, rows: Sequence[Row], client_id: str | None, size: int | None = None, enrich: object = None
    ) -> asyncio.Future[None]:
        """Queue rows (or raise, like put) and return a future set once they are committed or journaled."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue(rows, client_id, done, size, enrich)
        return done

    async def drain(self) -> None:
        """Flush everything queued now and wait until it is committed (or, while PostgreSQL fails, journaled)."""
        done = asyncio.get_running_loop().create_future()
        earlier = list(self._flushing)  # flushes already in flight may finish after the one that takes `done`
        self._enqueue((), None, done, 0, force=True)
        await done
        if earlier:
            await asyncio.wait(earlier)

    def _enqueue(
        self,
        rows: Sequence[Row],
        client_id: str | None,
        done: asyncio.Future[None] | None,
        size: int | None,
        enrich: object = None,
        force: bool = False,
    ) -> None:
        n = len(rows)
        if size is None:
            size = sum(map(len, rows))
        if self._closing and not force:
            raise ShuttingDown("the collector is shutting down; send again shortly")
        depth = self._depth + n
        held = self._bytes + size
        if depth > self.capacity or held > self.max_bytes:
            raise BufferFull(
                f"the buffer holds {self._depth} events ({self._bytes} bytes) of {self.capacity}"
                f" ({self.max_bytes} bytes); send again shortly"
            )
        queue = self._queue
        queue.append(_Item(rows, size, client_id, done, enrich))
        self._depth = depth
        self._bytes = held
        self._queued += n
        if done is not None:
            self._waiters += 1
            self.flow.spill = True
        elif depth >= self._high_water or held >= self._high_water_bytes:
            self.flow.spill = True
        # Wake a waiting flush task only when it has something new to do: time a first item, or flush now.
        if len(queue) == 1:
            self._first_at = time.monotonic()
            self._wake()
        elif done is not None or self._queued >= self._flush_max:
            self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def close(self) -> None:
        """Refuse new events, flush what is queued within the drain timeout, then log what was and was not kept."""
        already = self._closing
        self._closing = True
        self.flow.spill = True
        if self._task is not None and not self._task.done():
            self._wake()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._drain_timeout)
            except TimeoutError:
                flushing = dict(self._flushing)  # a cancelled flush leaves this dict as it ends
                for task in [self._task, *flushing]:
                    task.cancel()
                for task in [self._task, *flushing]:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self._abandon([item for items in flushing.values() for item in items])
        if not already:
            logger.info(
                "flusher stopped: batches=%d rows=%d lost=%d",
                self.stats.batches, self.stats.rows, self.stats.lost_on_close,
            )  # fmt: skip

    def _abandon(self, flushing: list[_Item]) -> None:
        items = flushing + list(self._queue)
        lost = self._depth
        self._queue.clear()
        self._flushing.clear()
        self._queued = self._depth = self._waiters = self._bytes = 0
        self.stats.lost_on_close += lost
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_exception(ShuttingDown("the collector stopped before these events were stored"))
        if lost:
            logger.error("flusher: %d buffered events could not be stored before the drain timeout", lost)

    async def _run(self) -> None:
        try:
            while self._queue or self._flushing or not self._closing:
                wait_s = self._due_in()
                if wait_s == 0.0:
                    if self._may_start_flush():
                        items = self._take()
                        task = asyncio.get_running_loop().create_task(self._flush(items), name="flush")
                        self._flushing[task] = items
                        task.add_done_callback(self._flushed)
                        continue
                    wait_s = None  # every flush slot is busy: the first to finish wakes us
                # Wait until put(), close() or a finished flush wakes us, or `wait_s` seconds pass (None: until
                # woken).
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout(wait_s):
                        await self._wakeup
                except TimeoutError:
                    pass
                finally:
                    self._wakeup = None
        except Exception:  # a bug, not a database failure (the sink keeps those): say so rather than die silently
            logger.exception("flusher crashed")

    def _may_start_flush(self) -> bool:
        """A flush is due: start it if a connection is free and it is worth one. Beside a flush in flight, that is a
        backlog of FLUSH_MAX_EVENTS (more than one connection keeps up with), a durable request waiting (its commit
        overlaps the other's fsync instead of queueing behind it), or closing; not a buffered trickle, which waits
        for the interval and fills one COPY. Once every connection is busy, durable requests share the next commit.

        Measured (docs/performance.md#storage): letting durable requests take the second connection raised durable
        batch20 from 67,840 to 89,472 events/s on the embedded PostgreSQL and single-event durable from 0.66 to 0.75
        of buffered on a stock one, against keeping it for backlogs only."""
        if not self._flushing:
            return True
        return len(self._flushing) < self._concurrency and (
            self._queued >= self._flush_max or self._waiters > 0 or self._closing
        )

    def _due_in(self) -> float | None:
        """Seconds until the next flush is due: 0 to flush now, None to wait for put() or close()."""
        if not self._queue:
            return None
        if self._closing or self._waiters or self._queued >= self._flush_max:
            return 0.0
        return max(0.0, self._first_at + self._interval - time.monotonic())

    def _take(self) -> list[_Item]:
        # Behind a backlog one COPY takes up to BACKLOG_FACTOR thresholds' worth: per row a large COPY is cheaper.
        # What is left over keeps the first item's time: it is overdue, so it goes next.
        limit = self._flush_max * BACKLOG_FACTOR
        items: list[_Item] = []
        taken = 0
        queue = self._queue
        while queue and taken < limit:
            item = queue.popleft()
            items.append(item)
            taken += len(item.rows)
            if item.done is not None:
                self._waiters -= 1
        self._queued -= taken
        return items

    async def _flush(self, items: list[_Item]) -> None:
        try:
            await self._write(items)
        except Exception:  # a bug, not a database failure (the sink keeps those): say so rather than lose it quietly
            logger.exception("flush crashed")

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.pop(task, None)
        self._wake()  # a flush slot is free

    async def _write(self, items: list[_Item]) -> None:
        rows: list[Row] = []
        clients: dict[str, int] = {}
        requests: list[tuple[int, object]] = []
        urgent = False
        for item in items:
            rows.extend(item.rows)
            requests.append((len(item.rows), item.enrich))
            if item.rows and item.client_id is not None:
                clients[item.client_id] = clients.get(item.client_id, 0) + len(item.rows)
            urgent = urgent or item.done is not None
        self._publish_spill()
        if rows:
            started = time.perf_counter()
            await self._sink.write(Batch(os.urandom(16), rows, clients, urgent, requests))
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.rows += len(rows)
            if self._on_flush is not None:
                self._on_flush(len(rows), elapsed)
            logger.info("Bulk inserted %d events for %d client(s) in %.1f ms", len(rows), len(clients), elapsed * 1000)
        self._depth -= len(rows)
        self._bytes -= sum(item.size for item in items)
        self._publish_spill()
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)

    def _publish_spill(self) -> None:
        """Tell the sink whether a batch it cannot store should go to the journal now rather than wait in memory."""
        self.flow.spill = (
            self._closing
            or bool(self._waiters)
            or self._depth >= self._high_water
            or self._bytes >= self._high_water_bytes
        )
