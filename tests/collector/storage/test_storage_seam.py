"""Storage on its own loop against an in-memory BatchWriter: retries, when it spills to the journal, replay.

The writer here implements our BatchWriter protocol (no database); the journal is the real one on disk. Storage
runs on its own thread, so the writer signals the test through threading events, awaited off the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.storage.batch import Batch
from collector.storage.journal import Journal
from collector.storage.spill import Storage
from collector.storage.writer import PermanentWriteError


class MemoryWriter:
    """Commits batches to a list, exactly once per batch id; fails while `down` (as a lost connection does)."""

    def __init__(self, *, down: bool = False, failures: int = 0) -> None:
        self.down = down
        self.failures = failures  # attempts to fail before the next success, on top of `down`
        self.committed: dict[bytes, list[bytes]] = {}
        self.attempts = 0
        self.attempted = threading.Event()  # set at every attempt
        self.replayed = threading.Event()  # set once copy_batches committed something

    def _attempt(self) -> None:
        self.attempts += 1
        self.attempted.set()
        if self.down or self.failures:
            self.failures = max(0, self.failures - 1)
            raise ConnectionResetError("the stand-in database is down")

    async def copy_batch(self, batch: Batch) -> bool:
        self._attempt()
        if any(row.startswith(b"poison") for row in batch.rows):
            raise PermanentWriteError("a row PostgreSQL refuses")
        if batch.batch_id in self.committed:
            return False
        self.committed[batch.batch_id] = list(batch.rows)
        return True

    async def copy_batches(self, batches: Sequence[Batch]) -> set[bytes]:
        self._attempt()
        new = {b.batch_id for b in batches if b.batch_id not in self.committed}
        for batch in batches:
            if batch.batch_id in new:
                self.committed[batch.batch_id] = list(batch.rows)
        self.replayed.set()
        return new

    async def close(self) -> None:
        pass


MakeStorage = Callable[..., Storage]


@pytest.fixture
async def make_storage(tmp_path: Path) -> AsyncIterator[MakeStorage]:
    """Builds Storage over a writer with a real journal under tmp_path, and closes it afterwards."""
    made: list[Storage] = []

    def make(writer: MemoryWriter | list[Any], **overrides: Any) -> Storage:
        options: dict[str, Any] = {
            "journal_max_bytes": 1 << 20, "journal_segment_bytes": 1 << 16,
            "retry_initial_s": 0.001, "retry_max_s": 0.005, **overrides,
        }  # fmt: skip
        storage = Storage(writer if isinstance(writer, list) else [writer], tmp_path / "journal", **options)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.close()


def batch(n: int, *, urgent: bool = False, tag: bytes = b"r") -> Batch:
    return Batch(os.urandom(16), [tag + b"%d" % i for i in range(n)], {"client_a": n}, urgent)


async def attempts_reach(writer: MemoryWriter, count: int) -> None:
    """Wait until the writer has been tried `count` times (on storage's thread)."""
    while writer.attempts < count:
        writer.attempted.clear()
        if writer.attempts < count:
            assert await asyncio.to_thread(writer.attempted.wait, 10), "the writer was not tried again"


async def test_a_failed_copy_is_retried_until_it_commits(make_storage: MakeStorage) -> None:
    """write() keeps a batch through failures (shown as failing) and returns once it is committed, once."""
    writer = MemoryWriter(failures=3)
    storage = make_storage(writer)
    await storage.start()
    first = batch(4)
    await storage.write(first)
    assert writer.committed == {first.batch_id: list(first.rows)}
    assert storage.stats.copy_failures == 3 and storage.stats.stored == 4 and storage.stats.journaled == 0
    assert not storage.failing


async def test_an_urgent_batch_is_journaled_at_once_while_the_writer_fails(make_storage: MakeStorage) -> None:
    """A batch a durable request waits on goes to the journal after one failed attempt; write() then returns."""
    writer = MemoryWriter(down=True)
    storage = make_storage(writer)
    await storage.start()
    await storage.write(batch(5, urgent=True))
    assert storage.stats.journaled == 5 and storage.journal_bytes > 0
    assert storage.failing and writer.committed == {}


async def test_a_batch_stays_in_memory_until_the_buffer_asks_to_spill(make_storage: MakeStorage) -> None:
    """While the writer fails, a batch nobody waits on is retried, not journaled, until flow.spill is set."""
    writer = MemoryWriter(down=True)
    storage = make_storage(writer)
    await storage.start()
    write = asyncio.create_task(storage.write(batch(3)))
    await attempts_reach(writer, 3)
    assert not write.done() and storage.stats.journaled == 0 and storage.journal_bytes == 0
    storage.flow.spill = True
    await write
    assert storage.stats.journaled == 3 and storage.journal_bytes > 0


async def test_the_journal_is_replayed_once_the_writer_recovers(make_storage: MakeStorage) -> None:
    """Journaled batches are committed by storage's replay task when the writer takes rows again; the journal
    empties and every row is counted as replayed."""
    writer = MemoryWriter(down=True)
    storage = make_storage(writer)
    await storage.start()
    spilled = [batch(2, urgent=True, tag=b"a"), batch(3, urgent=True, tag=b"b")]
    for each in spilled:
        await storage.write(each)
    writer.down = False
    assert await asyncio.to_thread(writer.replayed.wait, 10), "the journal was not replayed"
    await storage.write(batch(1))  # takes its turn after the replay's chunk
    assert {b.batch_id for b in spilled} <= set(writer.committed)
    assert storage.stats.replayed == 5 and storage.journal_bytes == 0


async def test_a_journal_a_dead_worker_left_is_replayed_at_start(make_storage: MakeStorage, tmp_path: Path) -> None:
    """Segments whose worker died are adopted when storage starts and replayed by its replay task."""
    dead = Journal(tmp_path / "journal", max_bytes=1 << 20, segment_bytes=1 << 16)
    left = batch(6)
    dead.append(left)
    dead._close_active()
    os.close(dead._lock_fd)  # what a SIGKILL leaves: the files, and the lock released
    writer = MemoryWriter()
    storage = make_storage(writer)
    await storage.start()
    assert await asyncio.to_thread(writer.replayed.wait, 10), "the adopted journal was not replayed"
    await storage.write(batch(1))  # takes its turn after the replay's chunk
    assert writer.committed[left.batch_id] == list(left.rows)
    assert storage.stats.replayed == 6 and storage.journal_bytes == 0


async def test_an_unstorable_row_alone_is_dropped(make_storage: MakeStorage) -> None:
    """A batch PostgreSQL refuses for its content is split until only the refused row is dropped and counted."""
    writer = MemoryWriter()
    storage = make_storage(writer)
    await storage.start()
    rows = [b"ok0", b"ok1", b"poison", b"ok3"]
    await storage.write(Batch(os.urandom(16), rows, {"client_a": 4}))
    stored = sorted(row for part in writer.committed.values() for row in part)
    assert stored == [b"ok0", b"ok1", b"ok3"]
    assert storage.stats.dropped_unstorable == 1 and storage.stats.stored == 3


class HeldWriter(MemoryWriter):
    """A MemoryWriter whose copy_batch waits until the test releases it (a slow commit); `holding` is set meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def copy_batch(self, batch: Batch) -> bool:
        self.holding.set()
        while not self.release.is_set():
            await asyncio.sleep(0.001)
        return await super().copy_batch(batch)


async def test_two_writers_store_two_batches_at_once(make_storage: MakeStorage) -> None:
    """With two writers, a batch is committed on the second while the first is still held by a slow commit."""
    slow, fast = HeldWriter(), HeldWriter()
    fast.release.set()
    storage = make_storage([slow, fast])
    await storage.start()
    first = asyncio.ensure_future(storage.write(batch(2, tag=b"a")))
    assert await asyncio.to_thread(slow.holding.wait, 10), "the first batch did not reach the first writer"
    await storage.write(batch(3, tag=b"b"))
    assert not first.done() and [len(rows) for rows in fast.committed.values()] == [3]
    slow.release.set()
    await first
    assert [len(rows) for rows in slow.committed.values()] == [2] and storage.stats.stored == 5
