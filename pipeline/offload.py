"""Offload: the pipeline's CPU-heavy work (decoding, redacting and encoding objects) in a worker process.

Threads share one GIL: a thread that decodes a 16 MiB object or redacts a client's events holds it for tens of
milliseconds at a time, and every /collect the same process answers meanwhile waits behind it (p99 passed 50 ms
in tests/security/test_privacy_time.py with redaction in a thread). In a process of its own that work runs on
another core; the process that answers /collect only hands it bytes and gets bytes back.

One worker process, started on first use (a collector that never processes never starts it) and stopped by
`shutdown` (the pipeline's close, or interpreter exit); on Linux it also dies with the process that started it,
when that one is killed outright and runs no exit code (_die_with_parent).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")

_pool: ProcessPoolExecutor | None = None


class OffloadFailed(Exception):
    """The worker process died (killed, out of memory) before it answered; the work can be tried again."""


def _executor() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # spawn, not fork: this process has threads (the flusher, asyncio's executor) whose locks a forked child
        # would inherit in whatever state they were.
        _pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )  # fmt: skip
    return _pool


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """In the worker, first thing: ask the kernel for SIGKILL when the process that started it dies.

    A collector killed outright (SIGKILL, the kernel's out-of-memory killer) runs no atexit and no shutdown, and the
    idle worker, blocked on its queue, outlived it for ever: under a supervisor that restarts the crashed worker, one
    more orphan (and its memory) per crash. The signal follows the thread that started the worker, which is the
    collector's event loop thread (the pool starts its process from `submit`): it lives as long as the process."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


async def run(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in the worker process (fn and args picklable: module-level functions, plain data)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    except BrokenProcessPool as exc:
        shutdown()  # the next call starts a new worker
        raise OffloadFailed(f"the pipeline's worker process died: {exc}") from exc


def shutdown() -> None:
    """Stop the worker process (waiting for work in progress); the next `run` starts a new one."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
