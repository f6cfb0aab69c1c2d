"""PartitionMaintainer: creates daily partitions of events_log ahead of time and prunes old batch ids."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from collector.storage.database import EventStore

logger = logging.getLogger(__name__)


class PartitionMaintainer:
    """Runs EventStore.ensure_partitions every `interval_s` seconds in one background task."""

    def __init__(self, store: EventStore, *, interval_s: float = 3600.0) -> None:
        self._store = store
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="partitions")

    async def close(self) -> None:
        """Stop the task; a run in progress is cancelled (partition creation is transactional)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._store.ensure_partitions(datetime.now(UTC).date())
                await self._store.prune_batches()
            except Exception:  # the DEFAULT partition still takes rows; try again next round
                logger.exception("Daily partition maintenance failed")
