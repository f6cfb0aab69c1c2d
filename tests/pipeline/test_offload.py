"""offload: the pipeline's CPU work runs in a worker process, which a crash does not take down for good."""

from __future__ import annotations

import os

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
