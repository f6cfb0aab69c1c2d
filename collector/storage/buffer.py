"""WriteBehindBuffer: the bounded in-memory queue of accepted events and the flusher thread that drains it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import uvloop

from collector.errors import BufferFull, ShuttingDown

logger = logging.getLogger(__name__)

Row = bytes  # one events_log record in binary COPY format (collector.storage.copyformat)
BACKLOG_FACTOR = 10


class Sink(Protocol):
    """Where flushed rows go (collector.storage.Storage). Used only from the flusher thread."""

    failing: bool

    def open(self) -> None: ...

    async def store(self, rows: list[Row], clients: dict[str, int], spill: Callable[[], bool]) -> None:
        """Return once the rows are committed or journaled; spill() says when journaling is called for."""
        ...

    async def replay_step(self) -> bool:
        """Replay a little of the journal; True if there is more to do right away."""
        ...

    def backing_off(self) -> float: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Item:
    """One request's rows: an item per request, not per event, keeps the hot path cheap."""

    rows: Sequence[Row]
    size: int  # bytes of the rows
    client_id: str | None
    enqueued_at: float
    done: asyncio.Future[None] | None  # on the request's (main) loop; set once the rows are stored


@dataclass(slots=True)
class BufferStats:
    batches: int = 0
    rows: int = 0
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
        max_bytes: int,
        flush_max_events: int,
        flush_interval_s: float,
        drain_timeout_s: float,
        spill_at: float = 0.5,
        on_flush: Callable[[int, float], None] | None = None,
    ) -> None:
        self._sink = sink
        # Called from the flusher thread with (events, seconds) once per flush: per batch, never per request.
        self._on_flush = on_flush
        self.capacity = max_events
        self.max_bytes = max_bytes
        self._flush_max = flush_max_events
        self._interval = flush_interval_s
        self._drain_timeout = drain_timeout_s
        # While PostgreSQL fails, batches stay in memory (and are retried) until the buffer is this full.
        self._high_water = int(max_events * spill_at)
        self._high_water_bytes = int(max_bytes * spill_at)
        # Shared between the request loop and the flusher thread; every field below is guarded by _lock.
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        self._queued = 0  # events in _queue
        self._writing = 0  # events taken by the flusher, not yet committed
        self._bytes = 0  # bytes of the rows queued or being written
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
        self.stats = BufferStats()

    @property
    def failing(self) -> bool:
        return self._sink.failing

    @property
    def depth(self) -> int:
        """Events held only in memory: queued plus the batch being written."""
        return self._queued + self._writing

    @property
    def bytes(self) -> int:
        """Bytes of the rows held only in memory."""
        return self._bytes

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

    def put(self, rows: Sequence[Row], client_id: str | None, size: int | None = None) -> None:
        """Queue a request's rows (`size`: their bytes, when the caller has counted them already); raise BufferFull
        or ShuttingDown (both 503) when they cannot be kept."""
        self._enqueue(rows, client_id, None, size)

    def put_waiting(self, rows: Sequence[Row], client_id: str | None, size: int | None = None) -> asyncio.Future[None]:
        """Queue rows (or raise, like put) and return a future set once they are committed or journaled."""
        assert self._loop is not None
        done = self._loop.create_future()
        self._enqueue(rows, client_id, done, size)
        return done

    async def drain(self) -> None:
        """Flush everything queued now and wait until it is committed (or, while PostgreSQL fails, journaled)."""
        assert self._loop is not None
        done = self._loop.create_future()
        self._enqueue((), None, done, 0, force=True)
        await done

    def _enqueue(
        self,
        rows: Sequence[Row],
        client_id: str | None,
        done: asyncio.Future[None] | None,
        size: int | None,
        force: bool = False,
    ) -> None:
        n = len(rows)
        if size is None:
            size = sum(map(len, rows))
        with self._lock:
            if self._closing and not force:
                raise ShuttingDown("the collector is shutting down; send again shortly")
            if self._queued + self._writing + n > self.capacity or self._bytes + size > self.max_bytes:
                raise BufferFull(
                    f"the buffer holds {self.depth} events ({self._bytes} bytes) of {self.capacity}"
                    f" ({self.max_bytes} bytes); send again shortly"
                )
            self._queue.append(_Item(rows, size, client_id, time.monotonic(), done))
            self._queued += n
            self._bytes += size
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
            self._queued = self._writing = self._waiters = self._bytes = 0
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
        try:
            self._sink.open()
        except Exception:
            logger.exception("opening the journal failed; spilling is unavailable")
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
                logger.exception("closing the flusher's storage failed")
            loop.close()
            assert self._loop is not None and self._stopped is not None
            self._loop.call_soon_threadsafe(_resolve, [self._stopped])

    async def _run(self) -> None:
        assert self._wakeup is not None
        replay_turn = False
        while True:
            with self._lock:
                urgent = self._closing or self._waiters or self._queued >= self._flush_max
            # Journal replay, a record at a time: whenever no live flush is due, and after every live flush even
            # when one is (under durable load a request always waits, so "when idle" would starve the replay).
            if (not urgent or replay_turn) and await self._sink.replay_step():
                replay_turn = False
                continue
            # Either flush now, or sleep until woken or `wait_s` seconds pass (None: until woken).
            wait_s: float | None = 0.0
            with self._lock:
                closing_and_done = self._closing and not self._queue
            if closing_and_done:
                # What time is left of the drain goes to the journal; what remains of it waits for the next start.
                if not self._sink.failing and await self._sink.replay_step():
                    continue
                return
            with self._lock:
                if not self._queue:
                    if self._closing:
                        return
                    # While PostgreSQL fails, come back for the journal when it may be tried again.
                    wait_s = self._sink.backing_off() + 0.01 if self._sink.failing else None
                elif not (self._closing or self._waiters or self._queued >= self._flush_max):
                    wait_s = max(0.0, self._queue[0].enqueued_at + self._interval - time.monotonic())
                if wait_s != 0.0:
                    self._sleeping = True
                    self._wakeup.clear()
            if wait_s == 0.0:
                await self._flush(self._take())
                replay_turn = True
                continue
            try:
                async with asyncio.timeout(wait_s):
                    await self._wakeup.wait()
            except TimeoutError:
                with self._lock:
                    self._sleeping = False

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
            clients: dict[str, int] = {}
            for item in items:
                if item.rows and item.client_id is not None:
                    clients[item.client_id] = clients.get(item.client_id, 0) + len(item.rows)
            await self._sink.store(rows, clients, self._should_spill)
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.rows += len(rows)
            if self._on_flush is not None:
                self._on_flush(len(rows), elapsed)
            logger.info("Bulk inserted %d events for %d client(s) in %.1f ms", len(rows), len(clients), elapsed * 1000)
        with self._lock:
            self._writing = 0
            self._bytes -= sum(item.size for item in items)
            self._inflight = []
        waiting = [item.done for item in items if item.done is not None]
        if waiting:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, waiting)

    def _should_spill(self) -> bool:
        """Whether a batch PostgreSQL will not take should go to the journal now rather than wait in memory."""
        with self._lock:
            return (
                self._closing
                or bool(self._waiters)
                or self._queued + self._writing >= self._high_water
                or self._bytes >= self._high_water_bytes
                or any(item.done is not None for item in self._inflight)
            )


def _resolve(waiting: list[asyncio.Future[None]]) -> None:
    for done in waiting:
        if not done.done():
            done.set_result(None)
