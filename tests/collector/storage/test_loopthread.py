"""LoopThread: runs coroutines on its own loop in its own thread, and stops cleanly whatever is left on it."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from collector.storage.loopthread import LoopThread


async def test_a_coroutine_runs_on_the_thread_and_its_result_comes_back() -> None:
    """run() executes on the thread's loop, not the caller's, and returns the coroutine's value."""
    worker = LoopThread("seam")
    await worker.start()

    async def where() -> str:
        return threading.current_thread().name

    try:
        assert await worker.run(where()) == "seam"
    finally:
        await worker.stop()


@pytest.mark.parametrize("leave_a_task", [False, True])
async def test_stopping_logs_no_error_with_or_without_tasks_left(
    leave_a_task: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() cancels what is left (a long task, or nothing at all) and the loop closes without an error line."""
    worker = LoopThread("seam")
    await worker.start()
    # Held here as storage holds its tasks: a task nobody references can be garbage-collected while pending, which
    # asyncio logs as an error of its own ("Task was destroyed but it is pending!"), whatever stop() does.
    left: list[asyncio.Task[bool]] = []
    if leave_a_task:

        async def spawn() -> None:
            left.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))

        await worker.run(spawn())
    with caplog.at_level(logging.ERROR, logger="collector.storage.loopthread"):
        await worker.stop()
    assert caplog.records == []
    assert all(task.cancelled() for task in left)
