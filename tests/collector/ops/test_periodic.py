"""Periodic, driven by a fake clock: the test releases each sleep itself, so no round waits on real time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from collector.ops.periodic import Periodic


class FakeClock:
    """A sleep that returns only when the test ticks, recording the intervals it was asked to wait."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._ticks.get()

    def tick(self) -> None:
        self._ticks.put_nowait(None)


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_round_runs_after_each_interval_and_never_at_start() -> None:
    """Nothing runs before the first interval has passed; then one round per interval, each asking the same wait."""
    clock, runs = FakeClock(), []

    async def run() -> None:
        runs.append(len(runs))

    schedule = Periodic("test", 7.5, run, sleep=clock.sleep)
    schedule.start()
    await settle()
    assert runs == [] and clock.asked == [7.5]
    for expected in (1, 2, 3):
        clock.tick()
        await settle()
        assert len(runs) == expected and schedule.rounds == expected
    assert clock.asked == [7.5] * 4
    await schedule.close()


async def test_a_failed_round_is_logged_and_the_next_one_still_comes(caplog: pytest.LogCaptureFixture) -> None:
    """An exception ends its round with a log line naming the schedule; the schedule keeps going."""
    clock, outcomes = FakeClock(), [RuntimeError("database down"), None]

    async def run() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    schedule = Periodic("Daily partition maintenance", 3600, run, sleep=clock.sleep)
    schedule.start()
    with caplog.at_level(logging.ERROR, logger="collector.ops.periodic"):
        clock.tick()
        await settle()
        clock.tick()
        await settle()
    assert outcomes == [] and schedule.rounds == 2
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and "Daily partition maintenance failed" in failures[0].getMessage()
    await schedule.close()


async def test_quiet_exceptions_end_the_round_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """A quiet exception (a stage another instance holds) is no failure: nothing is logged."""
    clock = FakeClock()

    class Busy(Exception):
        pass

    async def run() -> None:
        raise Busy

    schedule = Periodic("export", 60, run, quiet=(Busy,), sleep=clock.sleep)
    schedule.start()
    with caplog.at_level(logging.DEBUG, logger="collector.ops.periodic"):
        clock.tick()
        await settle()
    assert schedule.rounds == 1 and caplog.records == []
    await schedule.close()


async def test_close_cancels_a_round_in_progress_and_waits_for_it() -> None:
    """close() returns once the task has stopped, a round that was running cancelled, and a second close is harmless."""
    clock, started, cancelled = FakeClock(), asyncio.Event(), asyncio.Event()

    async def run() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    schedule = Periodic("process", 60, run, sleep=clock.sleep)
    schedule.start()
    clock.tick()
    await started.wait()
    await schedule.close()
    assert cancelled.is_set() and schedule.rounds == 0
    await schedule.close()
