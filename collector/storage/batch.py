"""Batch, the unit the buffer hands storage (and storage the writer and the journal), and Flow, their shared flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows stored together, exactly once: one COPY transaction claims `batch_id`, a replay finds it claimed."""

    batch_id: bytes  # 16 random bytes; halves of a split batch get ids derived from it
    rows: Sequence[bytes]  # binary COPY records (collector.storage.copyformat)
    clients: dict[str, int]  # rows per client, counted as `stored` in the same transaction
    # A durable request waits on it: while PostgreSQL fails, journal it at once rather than hold it in memory.
    # Not part of the journal record: a replayed batch has no one waiting.
    urgent: bool = False
    # (rows, what enrichment needs) per request, in row order (collector.enrich): the raw user agent and address,
    # used on storage's thread before the rows are committed or journaled, then dropped. Not part of the journal
    # record either: journaled rows are already enriched. Typed Any here: storage's floor does not know its shape.
    requests: Sequence[tuple[int, Any]] = ()


@dataclass(slots=True)
class Flow:
    """Two flags the buffer (on the request loop) and storage (on its own thread) share without a lock.

    Each flag is written by one side only and read by the other; a stale read costs one retry interval, not a row.
    """

    # Written by the buffer: it is closing, a durable request waits in its queue, or it is past its high-water mark
    # in events or bytes. Storage then journals a batch PostgreSQL will not take instead of holding it in memory.
    spill: bool = False
    # Written by storage: its last attempt at PostgreSQL failed (shown on /health as the flusher's "failing").
    failing: bool = False
