"""SingleFlight: one directory lookup per key at a time; whoever asks for the same key meanwhile waits for that one.

Shared by the domain authorizer and the write keys: 1,000 requests naming a key nobody has looked up yet make one
request to pixel-management, not 1,000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """The lookups in flight, by key (keys are bounded by the caller: normalized domains, validated write keys)."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}

    async def run(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """`fetch()`'s result for `key`, started now unless a lookup of `key` is already in flight."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # Shielded: one caller giving up must not cancel the lookup the others wait on.
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported as lost

    async def cancel(self) -> None:
        """Cancel the lookups in flight and wait until they have ended."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
