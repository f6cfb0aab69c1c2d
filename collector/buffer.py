"""WriteBehindBuffer: the bounded in-memory queue of accepted events and the flusher thread that drains it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import uvloop

from collector.errors import BufferFull, ShuttingDown
from collector.writer import PermanentWriteError

logger = logging.getLogger(__name__)

Row = bytes  # one events_log record in binary COPY format (collector.copyformat)
BACKLOG_FACTOR = 10


class Sink(Protocol):
    """Where flushed rows go. Used only from the flusher thread's event loop."""

    async def copy_events(self, rows: Sequence[Row]) -> None:
        """Return once the rows are committed; raise PermanentWriteError if their content is refused."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Item:
    """One request's rows: an item per request, not per event, keeps the hot path cheap."""

    rows: Sequence[Row]
    client_id: str | None
    enqueued_at: float
    done: asyncio.Future[None] | None  # on the request's (main) loop; set once the rows are stored


@dataclass(slots=True)
class BufferStats:
    batches: int = 0
    rows: int = 0
    failures: int = 0
    dropped_unstorable: int = 0
    lost_on_close: int = 0


class WriteBehindBuffer:
    """Bounded queue filled by request handlers, drained by one flusher thread writing to a Sink with COPY.

    The flusher runs its own event loop in its own thread: on the request loop, each of a COPY's round
    trips would wait behind every ready request (tens of ms under load), capping storage far below intake.

    A flush starts when `flush_max_events` are waiting, `flush_interval_s` after the oldest waiting event,
    or at once when a durable request waits on it (group commit). A failed write keeps its batch and
    retries with backoff; nothing is dropped because the database hiccuped.
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
        # Shared between the request loop and the flusher thread; every field below is guarded by _lock.
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        self._queued = 0  # events in _queue
        self._writing = 0  # events taken by the flusher, not yet committed
        self._waiters = 0  # items in _queue that a request awaits
        self._inflight: list[_Item] = []  # the items of the batch being written
        self._closing = False
        self._sleeping = False  # the flusher waits for _wakeup and must be woken
        # Owned by the flusher thread.
        self._flusher_loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        # The request loop, and a future on it that the flusher sets when it has stopped.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.failing = False
        self.stats = BufferStats()

    @property
    def depth(self) -> int:
        """Events held only in memory: queued plus the batch being written."""
        return self._queued + self._writing

    @property
    def accepting(self) -> bool:
        return not self._closing

    async def start(self) -> None:
        """Start the flusher thread and return once its loop runs."""
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="flusher", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)

    def put(self, rows: Sequence[Row], client_id: str | None) -> None:
        """Queue a request's rows; raise BufferFull or ShuttingDown (both 503) when they cannot be kept."""
        self._enqueue(rows, client_id, None)

    async def put_and_wait(self, rows: Sequence[Row], client_id: str | None) -> None:
        """Queue rows and return once they are committed (durable mode)."""
        assert self._loop is not None
        done = self._loop.create_future()
        self._enqueue(rows, client_id, done)
        await done

    async def drain(self) -> None:
        """Flush everything queued now and wait until it is committed."""
        assert self._loop is not None
        done = self._loop.create_future()
        self._enqueue((), None, done, force=True)
        await done

    def _enqueue(
        self, rows: Sequence[Row], client_id: str | None, done: asyncio.Future[None] | None, force: bool = False
    ) -> None:
        n = len(rows)
        with self._lock:
            if self._closing and not force:
                raise ShuttingDown("the collector is shutting down; send again shortly")
            if self._queued + self._writing + n > self.capacity:
                raise BufferFull(f"the buffer holds {self.depth} of {self.capacity} events; send again shortly")
            self._queue.append(_Item(rows, client_id, time.monotonic(), done))
            self._queued += n
            if done is not None:
                self._waiters += 1
            # Wake a sleeping flusher only when it has something new to do: time a first item, or flush now.
            wake = self._sleeping and (done is not None or len(self._queue) == 1 or self._queued >= self._flush_max)
            if wake:
                self._sleeping = False
        if wake:
            self._wake()

    def _wake(self) -> None:
        assert self._flusher_loop is not None and self._wakeup is not None
        self._flusher_loop.call_soon_threadsafe(self._wakeup.set)

    async def close(self) -> None:
        """Refuse new events, flush what is queued within the drain timeout, then log what was and was not kept."""
        with self._lock:
            already = self._closing
            self._closing = True
            self._sleeping = False
        if self._thread is not None and self._stopped is not None:
            if not already:
                self._wake()
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), self._drain_timeout)
            except TimeoutError:
                assert self._flusher_loop is not None and self._task is not None
                self._flusher_loop.call_soon_threadsafe(self._task.cancel)
                await asyncio.shield(self._stopped)
                self._abandon()
            await asyncio.to_thread(self._thread.join)
        if not already:
            logger.info(
                "flusher stopped: batches=%d rows=%d lost=%d",
                self.stats.batches, self.stats.rows, self.stats.lost_on_close,
            )  # fmt: skip

    def _abandon(self) -> None:
        with self._lock:
            items = [*self._inflight, *self._queue]
            lost = self._queued + self._writing
            self._queue.clear()
            self._inflight = []
            self._queued = self._writing = self._waiters = 0
        self.stats.lost_on_close += lost
        for item in items:
            if item.done is not None and not item.done.done():
                item.done.set_exception(ShuttingDown("the collector stopped before these events were stored"))
        if lost:
            logger.error("flusher: %d buffered events could not be stored before the drain timeout", lost)

    # Everything below runs in the flusher thread.

    def _thread_main(self, ready: threading.Event) -> None:
        loop = uvloop.new_event_loop()
        self._flusher_loop = loop
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._run())
        loop.call_soon(ready.set)
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug, not a database failure (those are retried): say so rather than die silently
            logger.exception("flusher crashed")
        finally:
            try:
                loop.run_until_complete(self._sink.close())
            except Exception:
                logger.exception("closing the flusher's database connection failed")
            loop.close()
            assert self._loop is not None and self._stopped is not None
            self._loop.call_soon_threadsafe(_resolve, [self._stopped])

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            with self._lock:
                if not self._queue:
                    if self._closing:
                        return
                    self._sleeping = True
                    self._wakeup.clear()
                    delay = None
                elif self._closing or self._waiters or self._queued >= self._flush_max:
                    delay = 0.0
                else:
                    delay = self._queue[0].enqueued_at + self._interval - time.monotonic()
                    if delay > 0:
                        self._sleeping = True
                        self._wakeup.clear()
            if delay is None:
                await self._wakeup.wait()
                continue
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                except TimeoutError:
                    with self._lock:
                        self._sleeping = False
                continue
            await self._flush(self._take())

    def _take(self) -> list[_Item]:
        # Behind a backlog one COPY takes up to BACKLOG_FACTOR thresholds' worth: per row a large COPY is cheaper.
        limit = self._flush_max * BACKLOG_FACTOR
        items: list[_Item] = []
        taken = 0
        with self._lock:
            while self._queue and taken < limit:
                item = self._queue.popleft()
                items.append(item)
                taken += len(item.rows)
                if item.done is not None:
                    self._waiters -= 1
            self._queued -= taken
            self._writing = taken
            self._inflight = items
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
        with self._lock:
            self._writing = 0
            self._inflight = []
        waiting = [item.done for item in items if item.done is not None]
        if waiting:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, waiting)

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


def _resolve(waiting: list[asyncio.Future[None]]) -> None:
    for done in waiting:
        if not done.done():
            done.set_result(None)
