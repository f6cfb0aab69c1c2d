"""PartitionMaintainer: creates daily partitions of events_log ahead of time and prunes old batch ids."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.ops.periodic import Periodic
from collector.storage.database import EventStore


class PartitionMaintainer:
    """Runs EventStore.ensure_partitions and prune_batches every `interval_s` seconds in one background task."""

    def __init__(self, store: EventStore, *, interval_s: float = 3600.0) -> None:
        self._store = store
        # A failed round is logged; the DEFAULT partition still takes rows until the next one succeeds.
        self._schedule = Periodic("Daily partition maintenance", interval_s, self.maintain)

    def start(self) -> None:
        self._schedule.start()

    async def close(self) -> None:
        """Stop the task; a run in progress is cancelled (partition creation is transactional)."""
        await self._schedule.close()

    async def maintain(self) -> None:
        await self._store.ensure_partitions(datetime.now(UTC).date())
        await self._store.prune_batches()
