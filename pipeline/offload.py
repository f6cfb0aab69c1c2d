"""Offload: the pipeline's CPU-heavy work (decoding, redacting and encoding objects) in a worker process.

Threads share one GIL: a thread that decodes a 16 MiB object or redacts a client's events holds it for tens of
milliseconds at a time, and every /collect the same process answers meanwhile waits behind it (p99 passed 50 ms
in tests/security/test_privacy_time.py with redaction in a thread). In a process of its own that work runs on
another core; the process that answers /collect only hands it bytes and gets bytes back.

One worker process, started on first use (a collector that never processes never starts it) and stopped by
`shutdown` (the pipeline's close, or interpreter exit).
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
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
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


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
