"""The spill journal: records read back as written, torn tails and corruption recognised, orphans adopted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.storage.batch import Batch
from collector.storage.journal import Journal, JournalFull, encode, read_segment


def rows(n: int, tag: bytes = b"r") -> list[bytes]:
    return [tag + str(i).encode() * (i + 1) for i in range(n)]


def make_journal(root: Path, **overrides: int) -> Journal:
    options = {"max_bytes": 1 << 20, "segment_bytes": 1 << 16, **overrides}
    return Journal(root, **options)


def crash(journal: Journal) -> None:
    """What a SIGKILL leaves: files as written, the folder's lock released."""
    journal._close_active()
    os.close(journal._lock_fd)


def test_records_read_back_as_written(tmp_path: Path) -> None:
    """Appended batches come back in order with their ids, rows and client counts."""
    journal = make_journal(tmp_path)
    journal.append(Batch(b"a" * 16, rows(3), {"client_a": 3}))
    journal.append(Batch(b"b" * 16, rows(2, b"x"), {"client_b": 1, "client_c": 1}))
    segment = journal.oldest_segment()
    assert segment is not None
    assert journal.records(segment) == [
        Batch(b"a" * 16, rows(3), {"client_a": 3}),
        Batch(b"b" * 16, rows(2, b"x"), {"client_b": 1, "client_c": 1}),
    ]
    assert journal.size == segment.stat().st_size
    journal.remove(segment)
    assert journal.empty and journal.oldest_segment() is None


def test_torn_tail_is_dropped_not_quarantined(tmp_path: Path) -> None:
    """A record cut short at the end of a segment (a crash mid-append, never acknowledged) is skipped and counted."""
    data = encode(Batch(b"a" * 16, rows(3), {"c": 3})) + encode(Batch(b"b" * 16, rows(5), {"c": 5}))[:-7]
    items = list(read_segment(data))
    assert isinstance(items[0], Batch) and items[0].batch_id == b"a" * 16
    assert len(items) == 2 and not isinstance(items[1], Batch) and items[1].torn


def test_corrupt_record_in_the_middle_is_quarantined(tmp_path: Path) -> None:
    """A damaged record between good ones is counted and moved to quarantine; its neighbours are replayed."""
    journal = make_journal(tmp_path)
    for tag in (b"a", b"b", b"c"):
        journal.append(Batch(tag * 16, rows(4, tag), {"c": 4}))
    segment = journal.oldest_segment()
    assert segment is not None
    data = bytearray(segment.read_bytes())
    second = len(encode(Batch(b"a" * 16, rows(4, b"a"), {"c": 4})))
    data[second + 40] ^= 0xFF  # a bit flip inside the second record's body
    segment.write_bytes(bytes(data))
    records = journal.records(segment)
    assert [r.batch_id for r in records] == [b"a" * 16, b"c" * 16]
    assert journal.stats.corrupt_records == 1 and journal.stats.torn_tails == 0
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_full_journal_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    """Past max_bytes append raises JournalFull; nothing already written is dropped."""
    one = len(encode(Batch(b"a" * 16, rows(10), {"c": 10})))
    journal = make_journal(tmp_path, max_bytes=2 * one + 10)
    journal.append(Batch(b"a" * 16, rows(10), {"c": 10}))
    journal.append(Batch(b"b" * 16, rows(10), {"c": 10}))
    with pytest.raises(JournalFull):
        journal.append(Batch(b"c" * 16, rows(10), {"c": 10}))
    segment = journal.oldest_segment()
    assert segment is not None
    assert [r.batch_id for r in journal.records(segment)] == [b"a" * 16, b"b" * 16]


def test_segments_rotate_at_their_size(tmp_path: Path) -> None:
    """Records go to a new segment once the current one would pass segment_bytes."""
    one = len(encode(Batch(b"a" * 16, rows(10), {"c": 10})))
    journal = make_journal(tmp_path, segment_bytes=2 * one)
    for i in range(5):
        journal.append(Batch(bytes([i]) * 16, rows(10), {"c": 10}))
    assert len(list(journal.dir.glob("seg-*.log"))) == 3


def test_a_dead_workers_journal_is_adopted_once(tmp_path: Path) -> None:
    """Segments of a worker that died (its lock free) move to the next journal opened; a live worker's stay."""
    dead = make_journal(tmp_path)
    dead.append(Batch(b"d" * 16, rows(2), {"c": 2}))
    crash(dead)
    alive = make_journal(tmp_path)
    alive.append(Batch(b"l" * 16, rows(2), {"c": 2}))
    assert alive.stats.adopted_segments == 1
    assert not dead.dir.exists()
    segment = alive.oldest_segment()
    assert segment is not None and [r.batch_id for r in alive.records(segment)] == [b"d" * 16]
    other = make_journal(tmp_path)
    assert other.stats.adopted_segments == 0, "a live worker's journal is not taken from it"
    assert alive.dir.exists()
