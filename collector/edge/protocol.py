"""EdgeProtocol: uvicorn's httptools protocol with the limits it lacks: header bytes, read and idle deadlines, and
a cap on open connections.

httptools buffers a header of any size (a 20 MB header is accepted), nothing in uvicorn bounds how long a client
may take to send its request once it has started, a connection that never sends a byte is kept for ever, and
uvicorn accepts connections until the process runs out of file descriptors. All of it is checked here, below the
ASGI app, at almost no cost to the hot path: a request that arrives in one read (nearly all of them) never arms a
timer, header bytes are counted per read (and only a read larger than the limit has its headers measured), and
the idle deadlines reuse the one keep-alive timer uvicorn arms anyway.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from collector.errors import CollectorError, HeadersTooLarge, RequestTimeout, TooManyConnections, render
from collector.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EdgeStats:
    """Requests this worker cut off below the app (shown in /health)."""

    headers_too_large: int = 0
    read_timeouts: int = 0
    idle_timeouts: int = 0  # no first byte within FIRST_BYTE_TIMEOUT_S, or idle after KEEPALIVE_TIMEOUT_S
    over_connection_limit: int = 0  # refused at once: the worker held max_connections already


# File descriptors a worker keeps for everything but client connections: the database pool, the journal, log
# files, the pipeline's sockets. The connection cap is lowered so that these are always left.
FD_RESERVE = 256
# After a refusal with client bytes still unread, how long the connection is kept to read and drop them.
LINGER_S = 2.0


def connection_cap(settings: Settings) -> int:
    """MAX_CONNECTIONS, lowered to what this process's file limit leaves after the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - FD_RESERVE - settings.pool_max_size))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was already answered (431)."""


def _response(exc: CollectorError) -> bytes:
    body = render(exc)
    status = HTTPStatus(exc.status)
    return b"".join((
        f"HTTP/1.1 {status.value} {status.phrase}".encode(), b"\r\ncontent-type: application/json\r\n",
        b"connection: close\r\ncontent-length: ", str(len(body)).encode(), b"\r\n\r\n", body,
    ))  # fmt: skip


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What a connection may cost below the app, from Settings (see EdgeProtocol)."""

    max_header_bytes: int
    read_timeout_s: float
    first_byte_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            read_timeout_s=settings.read_timeout_s,
            first_byte_timeout_s=settings.first_byte_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_connections=connection_cap(settings),
        )


@dataclass(frozen=True, slots=True)
class Edge:
    """One worker's edge: its limits and what they cut off. Built by the app's lifespan and handed to every
    connection through the lifespan state (EDGE_STATE), so nothing of it is class-wide or global."""

    limits: EdgeLimits
    stats: EdgeStats

    @classmethod
    def from_settings(cls, settings: Settings) -> Edge:
        return cls(EdgeLimits.from_settings(settings), EdgeStats())


# The lifespan state key under which the app's lifespan yields its Edge; uvicorn hands that state to each
# connection's protocol (app_state) once the lifespan has started, before the first connection is accepted.
EDGE_STATE = "collector.edge"


class EdgeProtocol(HttpToolsProtocol):
    """Answers 431 when a request's line and headers pass `max_header_bytes`, and 408 when a request is not
    fully read `read_timeout_s` seconds after its first bytes; either way the connection is closed. A connection
    silent for `first_byte_timeout_s` after it opened, or `keepalive_timeout_s` after its last answer, is closed;
    one opened while the worker holds `max_connections` is answered 503 and closed at once.

    Each connection takes its limits and stats from the Edge its app's lifespan yielded (EDGE_STATE); an app that
    yields none (run without our lifespan) gets the defaults of Settings and stats nobody reads.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        edge: Edge = app_state.get(EDGE_STATE) or Edge.from_settings(Settings())
        limits = edge.limits
        self.stats = edge.stats
        self.max_header_bytes = limits.max_header_bytes
        self.read_timeout_s = limits.read_timeout_s
        self.first_byte_timeout_s = limits.first_byte_timeout_s
        self.max_connections = limits.max_connections
        # uvicorn arms its keep-alive timer with this after each answer (config.timeout_keep_alive is whole seconds).
        self.timeout_keep_alive = limits.keepalive_timeout_s  # type: ignore[assignment]
        self._read_size = 0
        self._in_headers = True  # between two requests, or inside a request's line and headers
        self._in_body = False
        self._header_bytes = 0
        self._completed = False  # a request ended during the current read
        self._deadline: asyncio.TimerHandle | None = None
        self._discarding = False  # refused and answered: what the client still sends is read and dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Refused before a byte is read: a worker full of (maybe idle) sockets keeps serving the ones it has
            # instead of running out of file descriptors for its database and journal.
            self.stats.over_connection_limit += 1
            self._refuse(TooManyConnections("the server holds too many connections; retry later"), linger=False)
            return
        # The first-byte deadline is uvicorn's keep-alive timer, which the first read cancels (data_received).
        self.timeout_keep_alive_task = self.loop.call_later(self.first_byte_timeout_s, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.stats.idle_timeouts += 1
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._completed = False
        self._read_size = len(data)
        super().data_received(data)
        if self._in_headers:
            if self._completed:
                # The read ended a request; bytes of the next one that follow in it are not counted, which
                # bounds the overshoot to one read (pipelining clients only).
                self._header_bytes = 0
                return
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.stats.headers_too_large += 1
                self._refuse(HeadersTooLarge(f"the request line and headers exceed {self.max_header_bytes} bytes"))
                return
        # Only a request split over several reads gets a deadline; it runs from here, its first partial read.
        if self._deadline is None and (self._in_body or (self._in_headers and self._header_bytes)):
            self._deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def on_headers_complete(self) -> None:
        # Counting per read misses headers that end inside the read that carried them (a whole request in one
        # read, or pipelined behind another): when this read alone could pass the limit, measure them.
        if self._header_bytes + self._read_size > self.max_header_bytes and self._header_size() > self.max_header_bytes:
            self.stats.headers_too_large += 1
            self._refuse(HeadersTooLarge(f"the request line and headers exceed {self.max_header_bytes} bytes"))
            self._in_headers = False  # nothing more to count or time on this connection (data_received)
            raise _Refused  # the parser stops here: nothing of this request reaches the app
        self._in_headers = False
        self._in_body = True
        super().on_headers_complete()

    def _header_size(self) -> int:
        """The request line and headers as they came on the wire (give or take the whitespace around values)."""
        # "METHOD " + url + " HTTP/1.1\r\n", each "name: value\r\n", and the blank line.
        size = len(self.parser.get_method()) + len(self.url) + 13
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def send_400_response(self, msg: str) -> None:
        if self._discarding or self.transport.is_closing():
            return  # the parser stopped because we refused the request (431) and answered it already
        super().send_400_response(msg)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_headers = True
        self._completed = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.stats.read_timeouts += 1
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # the app answered already (e.g. 413); stop reading what is left
            return
        self._refuse(RequestTimeout(f"the request was not received within {self.read_timeout_s:g} s"))

    def _refuse(self, exc: CollectorError, *, linger: bool = True) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app, if it already runs, must not answer after us
            self.cycle.message_event.set()
        self.transport.write(_response(exc))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        # Closing a socket with client bytes unread makes the kernel send a reset, which can destroy the answer
        # before the client reads it. As nginx's lingering close does: send our end (FIN), read and drop what the
        # client still sends, and close when it closes its end or after LINGER_S, whichever comes first.
        self._discarding = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self._close_after_linger)

    def _close_after_linger(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
