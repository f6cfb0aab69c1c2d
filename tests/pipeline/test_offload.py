"""offload: the pipeline's CPU work runs in a worker process, which a crash does not take down for good."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from pipeline import offload


async def test_work_runs_in_another_process() -> None:
    """What processing hands to offload.run executes outside the process that answers /collect."""
    assert await offload.run(os.getpid) != os.getpid()


async def test_a_dead_worker_fails_its_call_and_the_next_call_gets_a_new_one() -> None:
    """A worker that dies mid-call (killed, out of memory) fails that call with OffloadFailed; the next runs."""
    first = await offload.run(os.getpid)
    with pytest.raises(offload.OffloadFailed):
        await offload.run(os._exit, 1)
    second = await offload.run(os.getpid)
    assert second not in (first, os.getpid())
    offload.shutdown()


async def test_the_worker_dies_with_a_process_killed_outright() -> None:
    """A collector SIGKILLed (out of memory, a supervisor's kill) leaves no worker process behind: a crashed worker
    restarted again and again would otherwise leak one idle process, and its memory, per crash."""
    script = (
        "import asyncio, os, sys, time\n"
        "from pipeline import offload\n"
        "print(asyncio.run(offload.run(os.getpid)), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).parents[2])
    )
    assert parent.stdout is not None
    async with asyncio.timeout(60):
        worker = int(await parent.stdout.readline())
    assert _alive(worker)
    parent.kill()
    try:
        async with asyncio.timeout(30):  # a bound for the test, not a speed: the kernel signals the worker at once
            while _alive(worker):
                await asyncio.sleep(0.05)
    finally:
        if _alive(worker):
            os.kill(worker, 9)  # leave no orphan behind when the test fails
        await parent.wait()  # (returns once every holder of its stdout, the worker too, has closed it)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
