"""Periodic: one background task that runs a coroutine function every so many seconds, until it is closed.

Every schedule of the service (accounting's flush, partition maintenance, the metrics sync, the pipeline's stages)
is one of these, so they start, fail and stop alike: a failed round is logged and the next one comes on time; close()
cancels the task (a round in progress included) and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Periodic:
    """Runs `run` every `interval_s` seconds (after each sleep; never at start) in a task named `name`.

    `quiet` exceptions end a round without a log line (e.g. a pipeline stage another instance holds); `sleep` is
    asyncio.sleep unless a test drives the rounds itself.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        run: Callable[[], Awaitable[object]],
        *,
        quiet: tuple[type[Exception], ...] = (),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.rounds = 0  # rounds finished, failed ones included
        self._run = run
        self._quiet = quiet
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def close(self) -> None:
        """Cancel the task, a round in progress included, and wait until it has stopped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self._sleep(self.interval_s)
            try:
                await self._run()
            except self._quiet:
                pass
            except Exception:  # the work's own state lets the next round pick up where this one stopped
                logger.exception("%s failed; next round in %g s", self.name, self.interval_s)
            self.rounds += 1
