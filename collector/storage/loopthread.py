"""LoopThread: an event loop (uvloop) on a thread of its own, and awaiting a coroutine there from another loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """Owns one thread running one event loop; `run(coro)` runs a coroutine there and awaits its result here.

    Cancelling the caller's await cancels the coroutine on the thread's loop. This is the only place where a
    future crosses between loops: what runs on the thread (collector.storage.spill.Storage) is plain asyncio.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start the thread and return once its loop runs."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the thread's loop; return (or raise) what it does."""
        assert self._loop is not None, "LoopThread.run before start"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        """Cancel what still runs on the thread's loop, close the loop and join the thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop = self._thread = None

    def _main(self, ready: threading.Event) -> None:
        loop = self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:  # gather() of nothing looks for a current loop instead of using this one
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:  # a bug: say so rather than let the thread die silently
            logger.exception("%s: the event loop failed", self._name)
        finally:
            loop.close()
