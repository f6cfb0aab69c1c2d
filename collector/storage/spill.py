"""Storage: gets each batch committed to PostgreSQL or, while it fails, fsync'd to the journal; replays the journal.

The buffer's sink. It runs on a loop of its own (collector.storage.loopthread): on the request loop each of a COPY's
round trips would wait behind every ready request (tens of ms under load), capping storage far below intake. The
promise it keeps: write() returns once the batch is in a committed transaction or an fsync'd journal record, and
never drops rows because PostgreSQL failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from collector.storage.batch import Batch, Flow
from collector.storage.journal import Journal, JournalFull
from collector.storage.loopthread import LoopThread
from collector.storage.writer import PermanentWriteError

logger = logging.getLogger(__name__)

REPLAY_ROWS = 10_000  # rows per replay transaction


class BatchWriter(Protocol):
    async def copy_batch(self, batch: Batch) -> bool: ...

    async def copy_batches(self, batches: Sequence[Batch]) -> set[bytes]: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class StorageStats:
    stored: int = 0  # rows committed by live flushes
    journaled: int = 0  # rows fsync'd to the journal
    replayed: int = 0  # journal rows committed
    deduplicated: int = 0  # rows of batches found already committed (retries, replays)
    dropped_unstorable: int = 0  # rows PostgreSQL refused whatever we did (should stay 0)
    copy_failures: int = 0
    journal_full: int = 0  # times a batch could not be journaled for lack of room


class Storage:
    """COPY with retries and backoff; spill to the journal when the buffer's `flow` asks; replay the journal.

    Its thread runs the writes the buffer's flushes await and the journal replay, a chunk per turn, each on one of
    `writers` (a connection each): as many at once as there are writers. One COPY connection tops out near 110k
    rows/s here while the HTTP side outruns it, and a durable flush spends most of its time waiting for the
    commit's fsync; a second connection overlaps one batch's commit with the next one's COPY. Writers are handed
    out in arrival order, so under steady load a replay chunk gets a turn rather than waiting for an idle buffer.
    """

    def __init__(
        self,
        writers: Sequence[BatchWriter],
        journal_dir: Path,
        *,
        journal_max_bytes: int,
        journal_segment_bytes: int,
        retry_initial_s: float,
        retry_max_s: float,
        flow: Flow | None = None,
        enrich: Callable[[Batch], Batch] | None = None,
    ) -> None:
        if not writers:
            raise ValueError("Storage needs at least one writer")
        self._writers = tuple(writers)
        # Fills each batch's enrichment columns on this thread before it is stored (collector.enrich.Enricher.apply).
        self._enrich = enrich
        self._journal_args = (journal_dir, journal_max_bytes, journal_segment_bytes)
        self.journal: Journal | None = None
        self.flow = Flow() if flow is None else flow
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._backoff = retry_initial_s
        self._next_attempt = 0.0
        self._streak = 0
        self._replaying: tuple[Path, deque[Batch]] | None = None
        self.stats = StorageStats()
        self._thread = LoopThread("storage")
        # Created on storage's own loop (in _begin), used only there: the writers not in use.
        self._free: asyncio.Queue[BatchWriter] | None = None
        self._replay_wanted: asyncio.Event | None = None
        self._replayer: asyncio.Task[None] | None = None

    @property
    def failing(self) -> bool:
        return self.flow.failing

    @property
    def journal_bytes(self) -> int:
        return 0 if self.journal is None else self.journal.size

    # Called from the buffer's loop.

    async def start(self) -> None:
        """Start storage's thread, open the journal there (adopting any a dead worker left) and start replaying."""
        await self._thread.start()
        await self._thread.run(self._begin())

    async def write(self, batch: Batch) -> None:
        """Return once the batch is committed or journaled (the buffer's Sink)."""
        await self._thread.run(self._write(batch))

    async def close(self, replay_s: float = 0.0) -> None:
        """Replay what is left of the journal for at most `replay_s` seconds (what remains waits for the next start),
        then close the connection and the journal and stop the thread."""
        try:
            if self._replay_wanted is not None:  # started
                await self._thread.run(self._end(replay_s))
        finally:
            await self._thread.stop()

    # Everything below runs on storage's loop.

    async def _begin(self) -> None:
        self._free = asyncio.Queue()
        for writer in self._writers:
            self._free.put_nowait(writer)
        self._replay_wanted = asyncio.Event()
        try:
            self.open()
        except Exception:
            logger.exception("opening the journal failed; spilling is unavailable")
        if self.journal is not None and not self.journal.empty:
            self._replay_wanted.set()
        self._replayer = asyncio.create_task(self._replay_forever())

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[BatchWriter]:
        """A writer of our own until the block ends (waiting, in arrival order, while all are in use)."""
        assert self._free is not None
        writer = await self._free.get()
        try:
            yield writer
        finally:
            self._free.put_nowait(writer)

    async def _write(self, batch: Batch) -> None:
        if self._enrich is not None:
            try:
                batch = self._enrich(batch)
            except Exception:  # a bug: the rows are kept without enrichment rather than lost
                logger.exception("Enrichment failed; storing %d events without it", len(batch.rows))
            if not batch.rows:  # every row was a bot's that its client drops (counted by the enricher)
                return
        async with self._turn() as writer:
            await self.store(batch, writer)

    async def _replay_forever(self) -> None:
        assert self._replay_wanted is not None
        while True:
            await self._replay_wanted.wait()
            # While PostgreSQL fails, come back for the journal when it may be tried again.
            if wait_s := self.backing_off():
                await asyncio.sleep(wait_s + 0.01)
            async with self._turn() as writer:
                more = await self.replay_step(writer)
            if not more and not self.backing_off():
                self._replay_wanted.clear()  # set again by the next batch journaled

    async def _end(self, replay_s: float) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if replay_s > 0 and self._free is not None:
            try:
                async with asyncio.timeout(replay_s):
                    async with self._turn() as writer:  # once a write the buffer's close cancelled let go of one
                        while not self.failing and await self.replay_step(writer):
                            pass
            except TimeoutError:
                pass
        for writer in self._writers:
            await writer.close()
        if self.journal is not None:
            self.journal.close()

    def open(self) -> None:
        """Open this worker's journal (adopting any a dead worker left)."""
        folder, max_bytes, segment_bytes = self._journal_args
        self.journal = Journal(folder, max_bytes=max_bytes, segment_bytes=segment_bytes)

    def backing_off(self) -> float:
        """Seconds until the next attempt at PostgreSQL is due (0 when one may be made now)."""
        return max(0.0, self._next_attempt - time.monotonic()) if self.flow.failing else 0.0

    async def store(self, batch: Batch, writer: BatchWriter) -> None:
        """Return once the batch is committed or journaled. While PostgreSQL fails, it goes to the journal as soon as
        it is urgent or the buffer's flow says spill (a durable request waits, the buffer is past its high-water
        mark, or it is closing); until then it is kept here and retried."""
        while True:
            if not self.backing_off():
                try:
                    dropped = await self._copy(batch, writer)
                except Exception as exc:  # anything but cancellation: PostgreSQL did not take it; keep the rows
                    self._failed(exc, len(batch.rows))
                else:
                    self._recovered()
                    self.stats.stored += len(batch.rows) - dropped
                    return
            if (batch.urgent or self.flow.spill) and self._journal(batch):
                return
            await asyncio.sleep(min(self.backing_off(), 0.05) or 0.05)

    def _journal(self, batch: Batch) -> bool:
        if self.journal is None:
            return False
        try:
            self.journal.append(batch)
        except (JournalFull, OSError) as exc:
            self.stats.journal_full += 1
            if self.stats.journal_full == 1 or self.stats.journal_full % 1000 == 0:
                logger.error("Cannot journal %d events (%s); holding them in memory", len(batch.rows), exc)
            return False
        self.stats.journaled += len(batch.rows)
        if self._replay_wanted is not None:
            self._replay_wanted.set()
        return True

    async def replay_step(self, writer: BatchWriter) -> bool:
        """Replay one chunk of the journal if PostgreSQL is reachable; True if there is more to do now."""
        journal = self.journal
        if journal is None or journal.empty or self.backing_off():
            return False
        if self._replaying is None:
            segment = journal.oldest_segment()
            if segment is None:
                return False
            try:
                self._replaying = (segment, deque(journal.records(segment)))
            except OSError:
                # Unreadable: set it aside rather than fail on it again and again.
                logger.exception("Journal: cannot read %s; moving it to quarantine", segment.name)
                journal.quarantine(segment)
                return True
        segment, batches = self._replaying
        if batches:
            # Durable group commits journal many small batches: replay them several to a transaction.
            chunk = [batches[0]]
            size = len(batches[0].rows)
            while len(chunk) < len(batches) and size + len(batches[len(chunk)].rows) <= REPLAY_ROWS:
                size += len(batches[len(chunk)].rows)
                chunk.append(batches[len(chunk)])
            try:
                dropped = await self._replay(chunk, writer)
            except Exception as exc:
                self._failed(exc, size)
                return False
            self._recovered()
            for _ in chunk:
                batches.popleft()
            self.stats.replayed += size - dropped
        if not batches:
            journal.remove(segment)
            self._replaying = None
            logger.info("Journal: replayed %s; %d bytes left", segment.name, journal.size)
        return not journal.empty

    async def _replay(self, batches: list[Batch], writer: BatchWriter) -> int:
        """Commit journaled batches in one transaction (one by one if one of them is refused); return rows dropped."""
        try:
            claimed = await writer.copy_batches(batches)
        except PermanentWriteError:
            dropped = 0
            for batch in batches:
                dropped += await self._copy(batch, writer)
            return dropped
        self.stats.deduplicated += sum(len(b.rows) for b in batches if b.batch_id not in claimed)
        return 0

    async def _copy(self, batch: Batch, writer: BatchWriter) -> int:
        """Commit the batch (once, whatever the retries); return how many unstorable rows were dropped."""
        try:
            if not await writer.copy_batch(batch):
                self.stats.deduplicated += len(batch.rows)
            return 0
        except PermanentWriteError as exc:
            # Validation should make this unreachable; if a row still poisons its batch, split the batch so that
            # only that row is dropped (and counted). Halves get ids derived from the batch's, so a replay of the
            # same journaled batch splits the same way and stays idempotent.
            rows = batch.rows
            if len(rows) == 1:
                self.stats.dropped_unstorable += 1
                logger.error("Dropped 1 event PostgreSQL refused to store: %s", exc)
                return 1
            middle = len(rows) // 2
            dropped = 0
            for half, part in ((b"L", rows[:middle]), (b"R", rows[middle:])):
                part_id = hashlib.blake2b(batch.batch_id + half, digest_size=16).digest()
                dropped += await self._copy(Batch(part_id, part, batch.clients if half == b"L" else {}), writer)
            return dropped

    def _failed(self, exc: BaseException, rows: int) -> None:
        self._streak += 1
        self.stats.copy_failures += 1
        if self._streak == 1:
            logger.warning("Bulk insert of %d events failed; retrying, journaling when needed: %r", rows, exc)
        self.flow.failing = True
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)

    def _recovered(self) -> None:
        if self._streak:
            logger.warning("PostgreSQL is taking events again after %d failed attempt(s)", self._streak)
        self._streak = 0
        self._backoff = self._retry_initial
        self.flow.failing = False
