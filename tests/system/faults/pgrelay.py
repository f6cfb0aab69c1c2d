"""PgRelay: a TCP relay on 127.0.0.1 in front of PostgreSQL's unix socket, which can play a hung server.

While relaying, bytes go both ways untouched. hang() turns it into a server that accepts connections, reads what
it is sent and never answers: connections already open stop hearing back (their server side is closed, so
PostgreSQL frees its backends), and new ones are accepted and ignored. unhang() closes the ignored connections
(their clients see them drop, as after a network cut) and relays new ones again.

It runs on an event loop in a thread of its own, so that a busy test loop cannot slow the database down.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

CHUNK = 256 * 1024


class _Link:
    """One client connection and, while relayed, its PostgreSQL connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.hung = False

    def hang(self) -> None:
        self.hung = True
        if self.upstream is not None:
            self.upstream.close()


class PgRelay:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.port = 0
        self.hung = False
        self.connections = 0  # accepted so far
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgrelay", daemon=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def hang(self) -> None:
        """From now on accept, read and never answer; what was relayed stops being answered."""
        self._call(self._set_hung(True))

    def unhang(self) -> None:
        """Drop the connections that were left unanswered and relay again."""
        self._call(self._set_hung(False))

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_hung(self, hung: bool) -> None:
        self.hung = hung
        for link in list(self._links):
            if hung:
                link.hang()
            elif link.hung:
                link.client.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.client.close()
            if link.upstream is not None:
                link.upstream.close()
        async with asyncio.timeout(5):
            while self._links:
                await asyncio.sleep(0.01)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(client_w)
        self._links.add(link)
        downstream: asyncio.Task[None] | None = None
        try:
            if self.hung:
                link.hung = True
            else:
                try:
                    upstream_r, link.upstream = await asyncio.open_unix_connection(str(self.socket_path))
                except OSError:
                    return  # PostgreSQL is down: the client sees its connection dropped
                if self.hung:  # hung while connecting
                    link.hang()
                else:
                    downstream = asyncio.create_task(self._pump_down(upstream_r, link))
            await self._pump_up(client_r, link)
            if link.upstream is not None:
                link.upstream.close()
            if downstream is not None:
                with contextlib.suppress(Exception):
                    await downstream
        finally:
            self._links.discard(link)
            client_w.close()
            if link.upstream is not None:
                link.upstream.close()

    async def _pump_up(self, client_r: asyncio.StreamReader, link: _Link) -> None:
        """Client → PostgreSQL until the client goes; while hung, what it sends is read and ignored."""
        while True:
            try:
                data = await client_r.read(CHUNK)
            except OSError:
                return
            if not data:
                return
            if link.hung or link.upstream is None:
                continue
            try:
                link.upstream.write(data)
                await link.upstream.drain()
            except OSError:
                if not link.hung:
                    return

    async def _pump_down(self, upstream_r: asyncio.StreamReader, link: _Link) -> None:
        """PostgreSQL → client; PostgreSQL closing closes the client too, unless the link plays hung."""
        while True:
            try:
                data = await upstream_r.read(CHUNK)
            except OSError:
                data = b""
            if link.hung:
                return
            if not data:
                link.client.close()
                return
            try:
                link.client.write(data)
                await link.client.drain()
            except OSError:
                return
