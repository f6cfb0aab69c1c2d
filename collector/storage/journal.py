"""Journal: the append-only, CRC-checked local spill of batches PostgreSQL could not take, and their replay.

Layout under DATA_DIR/journal/: one folder per running worker (`w<pid>-<random>/`), locked with flock for the
worker's lifetime, holding segments `seg-<n>.log` of at most `segment_bytes`. A folder whose lock can be taken
belongs to a worker that died: the next worker to look adopts its segments (renamed into its own folder, ahead of
its own) and replays them. Corrupt records are moved to `quarantine/`.

Record: magic `EVJ1`, body length (u32), CRC-32 of the body (u32), body. Body: batch id (16 bytes), the length
(u32) of a JSON object counting the rows per client, that object, row count (u32), each row's length (u32 each),
the rows (binary COPY records, collector.storage.copyformat). A record is fsync'd
before append() returns, so a durable acknowledgement may follow it; a crash mid-write leaves a torn record at the
tail of the last segment, which is recognised (short, or CRC mismatch at the end) and dropped: it was never
acknowledged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from collector.storage import copyformat
from collector.storage.batch import Batch

logger = logging.getLogger(__name__)

MAGIC = b"EVJ1"
_HEADER = struct.Struct(">4sII")
_COUNT = struct.Struct(">I")


class JournalFull(Exception):
    """Appending would pass JOURNAL_MAX_BYTES; old journal data is never dropped to make room."""


@dataclass(slots=True)
class JournalStats:
    records_written: int = 0
    rows_written: int = 0
    torn_tails: int = 0
    corrupt_records: int = 0
    adopted_segments: int = 0


def encode(batch: Batch) -> bytes:
    """One record, header included."""
    rows = batch.rows
    counts = orjson.dumps(batch.clients)
    lengths = struct.pack(f">{len(rows)}I", *(len(r) for r in rows))
    body = b"".join((batch.batch_id, _COUNT.pack(len(counts)), counts, _COUNT.pack(len(rows)), lengths, *rows))
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> Batch:
    batch_id = body[:16]
    (counts_length,) = _COUNT.unpack_from(body, 16)
    clients = orjson.loads(body[20 : 20 + counts_length])
    if not isinstance(clients, dict):
        raise ValueError("client counts are not an object")
    offset = 20 + counts_length
    (count,) = _COUNT.unpack_from(body, offset)
    lengths = struct.unpack_from(f">{count}I", body, offset + 4)
    rows = []
    offset += 4 + 4 * count
    for length in lengths:
        # A segment an older release wrote replays into today's columns (NULL for those it did not have).
        rows.append(copyformat.upgrade(body[offset : offset + length]))
        offset += length
    if offset != len(body):
        raise ValueError("row lengths do not add up to the record")
    return Batch(batch_id, rows, clients)


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes of a segment that are not a valid record: `torn` at the very end of the file, else corrupt."""

    offset: int
    data: bytes
    torn: bool


def read_segment(data: bytes) -> Iterator[Batch | Damage]:
    """The records of a segment in order, with the damaged stretches between (or after) them."""
    offset, end = 0, len(data)
    while offset < end:
        good = _record_at(data, offset)
        if good is not None:
            record, size = good
            yield record
            offset += size
            continue
        # Not a valid record here: the next valid one starts at a later magic; what lies between is damage.
        resume = data.find(MAGIC, offset + 1)
        while resume != -1 and _record_at(data, resume) is None:
            resume = data.find(MAGIC, resume + 1)
        stop = end if resume == -1 else resume
        yield Damage(offset, data[offset:stop], torn=resume == -1 and _cut_short(data, offset))
        offset = stop


def _cut_short(data: bytes, offset: int) -> bool:
    """Whether the record starting at `offset` is incomplete: the shape a crash mid-append leaves."""
    if len(data) - offset < _HEADER.size:
        return True
    magic, length, _crc = _HEADER.unpack_from(data, offset)
    return bool(magic == MAGIC and offset + _HEADER.size + length > len(data))


def _record_at(data: bytes, offset: int) -> tuple[Batch, int] | None:
    if len(data) - offset < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    body = data[start : start + length]
    if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
        return None
    try:
        return _decode_body(body), _HEADER.size + length
    except (struct.error, ValueError, orjson.JSONDecodeError):
        return None


class Journal:
    """One worker's journal folder: append records (fsync'd), and hand back whole segments for replay.

    Used only from storage's thread (collector.storage.spill). `size` counts the bytes of every segment not yet deleted.
    """

    def __init__(self, root: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = JournalStats()
        root.mkdir(parents=True, exist_ok=True)
        (root / "quarantine").mkdir(exist_ok=True)
        self.dir = root / f"w{os.getpid()}-{secrets.token_hex(4)}"
        self.dir.mkdir()
        self._lock_fd = os.open(self.dir / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._next = 1
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self.size = 0
        self.adopt_orphans()

    def adopt_orphans(self) -> int:
        """Take over the segments of workers that died (their folder's lock is free); return how many."""
        adopted = 0
        for folder in sorted(self.root.iterdir()):
            if folder == self.dir or not folder.is_dir() or folder.name == "quarantine":
                continue
            try:
                fd = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live worker's
            try:
                for segment in sorted(folder.glob("seg-*.log")):
                    target = self.dir / f"seg-{self._next:08d}.log"
                    self._next += 1
                    os.rename(segment, target)
                    self.size += target.stat().st_size
                    adopted += 1
                (folder / "lock").unlink(missing_ok=True)
                folder.rmdir()
            except OSError:
                logger.exception("Adopting journal folder %s failed", folder)
            finally:
                os.close(fd)
        if adopted:
            _fsync_dir(self.dir)
            self.stats.adopted_segments += adopted
            logger.warning("Journal: adopted %d segment(s) left by a stopped worker; they will be replayed", adopted)
        return adopted

    @property
    def empty(self) -> bool:
        return self.size == 0

    def append(self, batch: Batch) -> None:
        """Write and fsync one record; raise JournalFull rather than pass max_bytes."""
        record = encode(batch)
        if self.size + len(record) > self.max_bytes:
            raise JournalFull(f"the journal holds {self.size} bytes; JOURNAL_MAX_BYTES is {self.max_bytes}")
        if self._fd is None or self._active_size + len(record) > self.segment_bytes:
            self._rotate()
        assert self._fd is not None
        written = 0
        try:
            while written < len(record):
                written += os.write(self._fd, record[written:])
            os.fsync(self._fd)
        except OSError:
            # Disk full or failing: whatever part landed is a torn tail; start a fresh segment next time.
            self._close_active()
            raise
        self._active_size += len(record)
        self.size += len(record)
        self.stats.records_written += 1
        self.stats.rows_written += len(batch.rows)

    def _rotate(self) -> None:
        self._close_active()
        self._active = self.dir / f"seg-{self._next:08d}.log"
        self._next += 1
        self._fd = os.open(self._active, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._active_size = 0
        _fsync_dir(self.dir)

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._active = None

    def oldest_segment(self) -> Path | None:
        """The oldest segment to replay, closing the active one first if it is the only one left."""
        segments = sorted(self.dir.glob("seg-*.log"))
        if not segments:
            return None
        if segments[0] == self._active:
            self._close_active()
        return segments[0]

    def records(self, segment: Path) -> list[Batch]:
        """A segment's valid records; torn tails are dropped and corrupt stretches quarantined (both counted)."""
        records = []
        for item in read_segment(segment.read_bytes()):
            if isinstance(item, Batch):
                records.append(item)
            elif item.torn:
                self.stats.torn_tails += 1
                logger.warning("Journal %s: dropped a torn record of %d bytes at its end", segment.name, len(item.data))
            else:
                self.stats.corrupt_records += 1
                target = self.root / "quarantine" / f"{self.dir.name}-{segment.stem}-{item.offset}.bad"
                target.write_bytes(item.data)
                logger.error("Journal %s: %d corrupt bytes at %d moved to %s", segment.name, len(item.data),
                             item.offset, target)  # fmt: skip
        return records

    def quarantine(self, segment: Path) -> None:
        """Move a whole segment aside (it cannot be read), out of the replay and of `size`."""
        size = segment.stat().st_size
        os.rename(segment, self.root / "quarantine" / f"{self.dir.name}-{segment.name}")
        self.size -= size
        self.stats.corrupt_records += 1

    def remove(self, segment: Path) -> None:
        """Delete a segment once every record in it is committed to PostgreSQL."""
        size = segment.stat().st_size
        segment.unlink()
        _fsync_dir(self.dir)
        self.size -= size

    def close(self) -> None:
        """Close the active segment and release the folder (removing it when empty)."""
        self._close_active()
        if not any(self.dir.glob("seg-*.log")):
            (self.dir / "lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self.dir.rmdir()
        else:
            os.close(self._lock_fd)  # the next worker to start adopts what is left


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
