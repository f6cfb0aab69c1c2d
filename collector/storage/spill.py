"""Storage: gets each flushed batch committed to PostgreSQL or, while it fails, fsync'd to the journal; replays.

Runs only in the flusher thread. The promise it keeps for the buffer: store() returns once the batch is in a
committed transaction or in an fsync'd journal record, and never drops rows because PostgreSQL failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from collector.storage.journal import Journal, JournalFull, Record
from collector.storage.writer import Batch, PermanentWriteError

logger = logging.getLogger(__name__)

REPLAY_ROWS = 10_000  # rows per replay transaction


class BatchWriter(Protocol):
    async def copy_batch(self, batch_id: bytes, rows: list[bytes], clients: dict[str, int]) -> bool: ...

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
    """COPY with retries and backoff; spill to the journal when asked to; replay the journal when PostgreSQL is back."""

    def __init__(
        self,
        writer: BatchWriter,
        journal_dir: Path,
        *,
        journal_max_bytes: int,
        journal_segment_bytes: int,
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self._writer = writer
        self._journal_args = (journal_dir, journal_max_bytes, journal_segment_bytes)
        self.journal: Journal | None = None
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._backoff = retry_initial_s
        self._next_attempt = 0.0
        self._streak = 0
        self._replaying: tuple[Path, deque[Record]] | None = None
        self.failing = False
        self.stats = StorageStats()

    def open(self) -> None:
        """Open this worker's journal (adopting any a dead worker left); in the flusher thread."""
        folder, max_bytes, segment_bytes = self._journal_args
        self.journal = Journal(folder, max_bytes=max_bytes, segment_bytes=segment_bytes)

    @property
    def journal_bytes(self) -> int:
        return 0 if self.journal is None else self.journal.size

    def backing_off(self) -> float:
        """Seconds until the next attempt at PostgreSQL is due (0 when one may be made now)."""
        return max(0.0, self._next_attempt - time.monotonic()) if self.failing else 0.0

    async def store(self, rows: list[bytes], clients: dict[str, int], spill: Callable[[], bool]) -> None:
        """Return once `rows` are committed or journaled. While PostgreSQL fails, rows go to the journal as soon as
        `spill()` says so (a durable request waits, the buffer is past its high-water mark, or it is closing);
        until then they are kept here and retried."""
        batch_id = os.urandom(16)
        while True:
            if not self.backing_off():
                try:
                    dropped = await self._copy(batch_id, rows, clients)
                except Exception as exc:  # anything but cancellation: PostgreSQL did not take it; keep the rows
                    self._failed(exc, len(rows))
                else:
                    self._recovered()
                    self.stats.stored += len(rows) - dropped
                    return
            if spill() and self._journal(batch_id, rows, clients):
                return
            await asyncio.sleep(min(self.backing_off(), 0.05) or 0.05)

    def _journal(self, batch_id: bytes, rows: list[bytes], clients: dict[str, int]) -> bool:
        assert self.journal is not None
        try:
            self.journal.append(batch_id, rows, clients)
        except (JournalFull, OSError) as exc:
            self.stats.journal_full += 1
            if self.stats.journal_full == 1 or self.stats.journal_full % 1000 == 0:
                logger.error("Cannot journal %d events (%s); holding them in memory", len(rows), exc)
            return False
        self.stats.journaled += len(rows)
        return True

    async def replay_step(self) -> bool:
        """Replay one journal record if PostgreSQL is reachable; True if there is more to do now."""
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
        segment, records = self._replaying
        if records:
            # Durable group commits journal many small records: replay them several to a transaction.
            chunk = [records[0]]
            size = len(records[0].rows)
            while len(chunk) < len(records) and size + len(records[len(chunk)].rows) <= REPLAY_ROWS:
                size += len(records[len(chunk)].rows)
                chunk.append(records[len(chunk)])
            try:
                dropped = await self._replay(chunk)
            except Exception as exc:
                self._failed(exc, size)
                return False
            self._recovered()
            for _ in chunk:
                records.popleft()
            self.stats.replayed += size - dropped
        if not records:
            journal.remove(segment)
            self._replaying = None
            logger.info("Journal: replayed %s; %d bytes left", segment.name, journal.size)
        return not journal.empty

    async def _replay(self, records: list[Record]) -> int:
        """Commit journal records in one transaction (one at a time if one of them is refused); return rows dropped."""
        try:
            claimed = await self._writer.copy_batches([(r.batch_id, r.rows, r.clients) for r in records])
        except PermanentWriteError:
            dropped = 0
            for record in records:
                dropped += await self._copy(record.batch_id, record.rows, record.clients)
            return dropped
        self.stats.deduplicated += sum(len(r.rows) for r in records if r.batch_id not in claimed)
        return 0

    async def _copy(self, batch_id: bytes, rows: list[bytes], clients: dict[str, int]) -> int:
        """Commit the batch (once, whatever the retries); return how many unstorable rows were dropped."""
        try:
            if not await self._writer.copy_batch(batch_id, rows, clients):
                self.stats.deduplicated += len(rows)
            return 0
        except PermanentWriteError as exc:
            # Validation should make this unreachable; if a row still poisons its batch, split the batch so that
            # only that row is dropped (and counted). Halves get ids derived from the batch's, so a replay of the
            # same journal record splits the same way and stays idempotent.
            if len(rows) == 1:
                self.stats.dropped_unstorable += 1
                logger.error("Dropped 1 event PostgreSQL refused to store: %s", exc)
                return 1
            middle = len(rows) // 2
            dropped = 0
            for half, part in ((b"L", rows[:middle]), (b"R", rows[middle:])):
                part_id = hashlib.blake2b(batch_id + half, digest_size=16).digest()
                dropped += await self._copy(part_id, part, clients if half == b"L" else {})
            return dropped

    def _failed(self, exc: BaseException, rows: int) -> None:
        self._streak += 1
        self.stats.copy_failures += 1
        if self._streak == 1:
            logger.warning("Bulk insert of %d events failed; retrying, journaling when needed: %r", rows, exc)
        self.failing = True
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)

    def _recovered(self) -> None:
        if self._streak:
            logger.warning("PostgreSQL is taking events again after %d failed attempt(s)", self._streak)
        self._streak = 0
        self._backoff = self._retry_initial
        self.failing = False

    async def close(self) -> None:
        await self._writer.close()
        if self.journal is not None:
            self.journal.close()
