"""The write-behind buffer against in-memory sinks: when it flushes, what a batch holds, limits, waiters, close.

The sinks here implement our one-method Sink protocol (no database): every wait is on the buffer's own futures or
on an event the sink sets, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from collector.errors import BufferFull, ShuttingDown
from collector.storage.batch import Batch, Flow
from collector.storage.buffer import WriteBehindBuffer

HOUR = 3600.0  # an interval that never passes during a test: only size, waiters or close flush


class ListSink:
    """Stores every batch in a list at once; `written` is set after each write."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.written = asyncio.Event()

    async def write(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.written.set()

    async def next_batch(self) -> Batch:
        """The next batch written (waiting for it if none is there yet)."""
        count = len(self.batches)
        async with asyncio.timeout(10):  # a guard against a hang, not a measurement
            while len(self.batches) == count:
                self.written.clear()
                await self.written.wait()
        return self.batches[count]


class GateSink(ListSink):
    """Holds each write until the test opens the gate; `entered` is set once a write has started."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = 0
        self.seen: list[Batch] = []

    async def write(self, batch: Batch) -> None:
        self.seen.append(batch)
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await super().write(batch)


class FlakySink(ListSink):
    """Fails `failures` attempts before storing, as Storage does while PostgreSQL is down: it keeps the batch,
    says so in `flow.failing`, and tries again each time the test sets `retry`."""

    def __init__(self, flow: Flow, failures: int) -> None:
        super().__init__()
        self.flow = flow
        self.failures = failures
        self.failed = asyncio.Event()
        self.retry = asyncio.Event()

    async def write(self, batch: Batch) -> None:
        while self.failures:
            self.failures -= 1
            self.flow.failing = True
            self.failed.set()
            await self.retry.wait()
            self.retry.clear()
        self.flow.failing = False
        await super().write(batch)


MakeBuffer = Callable[..., WriteBehindBuffer]


@pytest.fixture
async def make_buffer() -> AsyncIterator[MakeBuffer]:
    """Builds started buffers over a given sink (generous limits unless overridden) and closes them afterwards."""
    made: list[WriteBehindBuffer] = []

    def make(sink: Any, **overrides: Any) -> WriteBehindBuffer:
        options: dict[str, Any] = {
            "max_events": 1000, "max_bytes": 1 << 20, "flush_max_events": 100,
            "flush_interval_s": HOUR, "drain_timeout_s": 10, **overrides,
        }  # fmt: skip
        buffer = WriteBehindBuffer(sink, **options)
        made.append(buffer)
        return buffer

    yield make
    for buffer in made:
        if isinstance(buffer._sink, GateSink):
            buffer._sink.gate.set()
        await buffer.close()


def rows(n: int, tag: bytes = b"r") -> list[bytes]:
    return [tag + b"%d" % i for i in range(n)]


async def settle() -> None:
    """Let every task that is ready run until it waits again (turns of the loop, not a timed wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_reaching_flush_max_events_flushes_one_batch(make_buffer: MakeBuffer) -> None:
    """Below FLUSH_MAX_EVENTS nothing is written (the interval is an hour); the event that reaches it flushes all."""
    sink = ListSink()
    buffer = make_buffer(sink, flush_max_events=5)
    await buffer.start()
    for i in range(4):
        buffer.put(rows(1, b"e%d" % i), "client_a")
    await settle()
    assert sink.batches == [] and buffer.depth == 4
    buffer.put(rows(1, b"e4"), "client_a")
    batch = await sink.next_batch()
    assert len(batch.rows) == 5 and batch.clients == {"client_a": 5} and not batch.urgent
    await buffer.drain()
    assert len(sink.batches) == 1 and buffer.depth == 0


async def test_a_lone_event_is_flushed_once_the_interval_passes(make_buffer: MakeBuffer) -> None:
    """An event below the size threshold is written once FLUSH_INTERVAL_MS has passed, with no drain asked for."""
    sink = ListSink()
    buffer = make_buffer(sink, flush_max_events=1000, flush_interval_s=0.001)
    await buffer.start()
    buffer.put([b"lonely"], "client_a")
    batch = await sink.next_batch()
    assert list(batch.rows) == [b"lonely"]
    assert buffer.depth == 0 and buffer.bytes == 0


async def test_a_durable_waiter_is_resolved_only_after_the_write(make_buffer: MakeBuffer) -> None:
    """put_waiting flushes at once (group commit) and its future is set only once the sink has returned."""
    sink = GateSink()
    buffer = make_buffer(sink)
    await buffer.start()
    done = buffer.put_waiting(rows(3), "client_a")
    await sink.entered.wait()
    [batch] = sink.seen
    assert batch.urgent and len(batch.rows) == 3
    await settle()
    assert not done.done(), "the rows are not stored yet"
    sink.gate.set()
    await done
    assert sink.batches == [batch] and buffer.depth == 0


async def test_a_batch_holds_every_request_with_counts_per_client(make_buffer: MakeBuffer) -> None:
    """One flush writes every queued request's rows in order, counts them per client and gets a fresh batch id."""
    sink = ListSink()
    buffer = make_buffer(sink)
    await buffer.start()
    buffer.put(rows(2, b"a"), "client_a")
    buffer.put(rows(1, b"b"), "client_b")
    buffer.put(rows(1, b"n"), None)
    buffer.put(rows(1, b"c"), "client_a")
    await buffer.drain()
    buffer.put(rows(1, b"z"), "client_a")
    await buffer.drain()
    first, second = sink.batches
    assert list(first.rows) == [b"a0", b"a1", b"b0", b"n0", b"c0"]
    assert first.clients == {"client_a": 3, "client_b": 1}
    assert len(first.batch_id) == 16 and first.batch_id != second.batch_id


async def test_drain_of_an_empty_buffer_writes_nothing(make_buffer: MakeBuffer) -> None:
    """drain() with nothing queued returns without handing the sink an empty batch."""
    sink = ListSink()
    buffer = make_buffer(sink)
    await buffer.start()
    await buffer.drain()
    assert sink.batches == [] and buffer.stats.batches == 0


async def test_a_full_buffer_refuses_by_events_and_by_bytes(make_buffer: MakeBuffer) -> None:
    """Past max_events or max_bytes put raises BufferFull and keeps nothing of the refused request."""
    by_events = make_buffer(ListSink(), max_events=3)
    by_events.put(rows(3), "client_a")
    with pytest.raises(BufferFull):
        by_events.put(rows(1), "client_a")
    assert by_events.depth == 3
    by_bytes = make_buffer(ListSink(), max_bytes=10)
    by_bytes.put([b"12345", b"67890"], "client_a")
    with pytest.raises(BufferFull):
        by_bytes.put([b"x"], "client_a")
    assert (by_bytes.depth, by_bytes.bytes) == (2, 10)


async def test_the_batch_being_written_still_counts_against_the_limits(make_buffer: MakeBuffer) -> None:
    """Events handed to the sink stay in depth and bytes until it returns: they are still only in memory."""
    sink = GateSink()
    buffer = make_buffer(sink, max_events=4, flush_max_events=3)
    await buffer.start()
    buffer.put(rows(3), "client_a", size=30)
    await sink.entered.wait()
    assert (buffer.depth, buffer.bytes) == (3, 30), "the caller's size is what is counted"
    buffer.put(rows(1), "client_a")
    with pytest.raises(BufferFull):
        buffer.put(rows(1), "client_a")
    sink.gate.set()
    await buffer.drain()
    assert (buffer.depth, buffer.bytes) == (0, 0)
    buffer.put(rows(4), "client_a")


async def test_behind_a_backlog_one_batch_takes_at_most_ten_thresholds(make_buffer: MakeBuffer) -> None:
    """Events queued behind a slow write go out in batches of at most 10 x FLUSH_MAX_EVENTS, all of them."""
    sink = GateSink()
    buffer = make_buffer(sink, flush_max_events=1)
    await buffer.start()
    buffer.put(rows(1), "client_a")
    await sink.entered.wait()
    for _ in range(15):
        buffer.put(rows(1), "client_a")
    sink.gate.set()
    await buffer.drain()
    assert [len(b.rows) for b in sink.batches] == [1, 10, 5]


async def test_closing_refuses_new_events_and_flushes_what_is_queued(
    make_buffer: MakeBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """After close() put and put_waiting raise ShuttingDown; what was queued was written, as the log line says."""
    caplog.set_level(logging.INFO, logger="collector.storage.buffer")
    sink = ListSink()
    buffer = make_buffer(sink)
    await buffer.start()
    buffer.put(rows(7), "client_a")
    await buffer.close()
    assert [len(b.rows) for b in sink.batches] == [7]
    assert not buffer.accepting
    with pytest.raises(ShuttingDown):
        buffer.put(rows(1), "client_a")
    with pytest.raises(ShuttingDown):
        buffer.put_waiting(rows(1), "client_a")
    assert "flusher stopped: batches=1 rows=7 lost=0" in caplog.text


async def test_a_write_past_the_drain_timeout_is_abandoned_and_counted(
    make_buffer: MakeBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """When the sink does not return within the drain timeout, close cancels it, fails its waiters with
    ShuttingDown and counts every event still in memory as lost."""
    caplog.set_level(logging.INFO, logger="collector.storage.buffer")
    sink = GateSink()
    buffer = make_buffer(sink, drain_timeout_s=0)
    await buffer.start()
    done = buffer.put_waiting(rows(2), "client_a")
    await sink.entered.wait()
    buffer.put(rows(3), "client_a")
    await buffer.close()
    assert sink.cancelled == 1 and sink.batches == []
    with pytest.raises(ShuttingDown):
        await done
    assert buffer.stats.lost_on_close == 5 and (buffer.depth, buffer.bytes) == (0, 0)
    assert "flusher stopped: batches=0 rows=0 lost=5" in caplog.text


async def test_while_the_sink_fails_the_buffer_holds_and_reports_it(make_buffer: MakeBuffer) -> None:
    """A sink that keeps its batch while failing shows on buffer.failing; the waiter is set once it succeeds."""
    flow = Flow()
    sink = FlakySink(flow, failures=2)
    buffer = make_buffer(sink, flow=flow)
    await buffer.start()
    done = buffer.put_waiting(rows(4), "client_a")
    for _ in range(2):
        await sink.failed.wait()
        sink.failed.clear()
        assert buffer.failing and buffer.depth == 4 and not done.done()
        sink.retry.set()
    await sink.next_batch()
    await done
    assert not buffer.failing and buffer.depth == 0
    assert sink.failures == 0


async def test_spill_is_asked_for_by_waiters_high_water_and_close(make_buffer: MakeBuffer) -> None:
    """flow.spill is set while a durable request waits, past the high-water mark or once closing, and cleared
    once the backlog is written; Storage reads it to journal rather than hold a batch in memory."""
    sink = GateSink()
    buffer = make_buffer(sink, max_events=10, flush_max_events=2, spill_at=0.5)
    await buffer.start()
    buffer.put(rows(2), "client_a")
    await sink.entered.wait()
    assert not buffer.flow.spill, "two events in flight are below the high-water mark of five"
    done = buffer.put_waiting(rows(1), "client_a")
    assert buffer.flow.spill, "a durable request waits behind the batch being written"
    sink.gate.set()
    await done
    assert not buffer.flow.spill
    sink.gate.clear()
    buffer.put(rows(2), "client_a")
    await settle()
    buffer.put(rows(2), "client_a")
    assert not buffer.flow.spill
    buffer.put(rows(1), "client_a")
    assert buffer.flow.spill, "five events held: the high-water mark"
    sink.gate.set()
    await buffer.drain()
    assert not buffer.flow.spill
    await buffer.close()
    assert buffer.flow.spill


class SlotSink(ListSink):
    """Holds each write until the test releases it by batch (its first row); `started` lists the writes begun."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[Batch] = []
        self.release: dict[bytes, asyncio.Event] = {}
        self.cancelled = 0

    async def write(self, batch: Batch) -> None:
        self.started.append(batch)
        gate = self.release.setdefault(batch.rows[0], asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await super().write(batch)

    def open(self, first_row: bytes) -> None:
        self.release.setdefault(first_row, asyncio.Event()).set()


async def test_with_concurrency_two_a_backlog_starts_a_second_flush_while_the_first_waits(
    make_buffer: MakeBuffer,
) -> None:
    """FLUSH_CONCURRENCY=2: a backlog of FLUSH_MAX_EVENTS behind a slow commit goes out at once, never a third."""
    sink = SlotSink()
    buffer = make_buffer(sink, concurrency=2, flush_max_events=2)
    for tag in (b"a", b"b", b"c"):
        buffer.put(rows(2, tag), "client_a")
        if tag == b"a":
            await buffer.start()
        await settle()
    assert [b.rows[0] for b in sink.started] == [b"a0", b"b0"], "two flushes in flight, the third waits"
    sink.open(b"b0")
    await settle()
    assert [b.rows[0] for b in sink.started][2:] == [b"c0"], "the freed slot takes what waited"
    sink.open(b"a0")
    sink.open(b"c0")
    await buffer.drain()
    assert buffer.depth == 0 and buffer.bytes == 0 and buffer.stats.rows == 6


async def test_durable_requests_take_a_free_connection_then_share_the_next_commit(make_buffer: MakeBuffer) -> None:
    """Concurrency two: a durable request beside a commit in flight goes out at once on the free connection; once
    both are busy, the durable requests that come meanwhile all share the next commit (group commit)."""
    sink = SlotSink()
    buffer = make_buffer(sink, concurrency=2)
    await buffer.start()
    first = buffer.put_waiting([b"a"], "client_a")
    await settle()
    second = buffer.put_waiting([b"b"], "client_a")
    await settle()
    later = [buffer.put_waiting([tag], "client_a") for tag in (b"c", b"d")]
    await settle()
    assert [list(b.rows) for b in sink.started] == [[b"a"], [b"b"]]
    sink.open(b"a")
    await first
    await settle()
    assert [list(b.rows) for b in sink.started][2:] == [[b"c", b"d"]], "one commit for both"
    sink.open(b"b")
    sink.open(b"c")
    await asyncio.gather(second, *later)


async def test_a_buffered_trickle_beside_a_flush_waits_for_the_interval(make_buffer: MakeBuffer) -> None:
    """Concurrency two: buffered events below FLUSH_MAX_EVENTS beside a flush in flight do not take the second
    connection; they wait, and go in one COPY once the flush in flight has ended and drain asks for them."""
    sink = SlotSink()
    buffer = make_buffer(sink, concurrency=2, flush_max_events=2)
    await buffer.start()
    buffer.put(rows(2, b"a"), "client_a")
    await settle()
    buffer.put([b"t0"], "client_a")
    await settle()
    assert [b.rows[0] for b in sink.started] == [b"a0"], "one event is no backlog"
    sink.open(b"a0")
    sink.open(b"t0")
    await buffer.drain()
    assert [list(b.rows) for b in sink.batches] == [[b"a0", b"a1"], [b"t0"]]


async def test_drain_waits_for_flushes_already_in_flight(make_buffer: MakeBuffer) -> None:
    """drain() returns only once a flush that started before it has finished, even if its own flush ends first."""
    sink = SlotSink()
    buffer = make_buffer(sink, concurrency=2, flush_max_events=1)
    await buffer.start()
    buffer.put([b"slow"], "client_a")
    await settle()
    drained = asyncio.ensure_future(buffer.drain())
    await settle()
    assert not drained.done(), "the slow flush still holds an event"
    sink.open(b"slow")
    await drained
    assert buffer.depth == 0 and [list(b.rows) for b in sink.batches] == [[b"slow"]]


async def test_close_past_the_drain_timeout_abandons_every_flush_in_flight(
    make_buffer: MakeBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two flushes stuck past the drain timeout: both are cancelled, both waiters fail, every event is counted lost."""
    caplog.set_level(logging.INFO, logger="collector.storage.buffer")
    sink = SlotSink()
    buffer = make_buffer(sink, concurrency=2, drain_timeout_s=0, flush_max_events=2)
    await buffer.start()
    waiters = []
    for tag in (b"x", b"y"):
        waiters.append(buffer.put_waiting(rows(2, tag), "client_a"))
        await settle()
    assert len(sink.started) == 2
    await buffer.close()
    assert sink.cancelled == 2
    for done in waiters:
        with pytest.raises(ShuttingDown):
            await done
    assert buffer.stats.lost_on_close == 4 and (buffer.depth, buffer.bytes) == (0, 0)
    assert "lost=4" in caplog.text
