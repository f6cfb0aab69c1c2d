"""EdgeProtocol: uvicorn's httptools protocol with the two limits it lacks, header bytes and a read deadline.

httptools buffers a header of any size (a 20 MB header is accepted), and nothing in uvicorn bounds how long a
client may take to send its request once it has started. Both checks live here, below the ASGI app, and cost
the hot path nothing: a request that arrives in one read (nearly all of them) never arms a timer, and header
bytes are counted per read, not per header.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collector.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EdgeStats:
    """Requests this worker cut off below the app (shown in /health)."""

    headers_too_large: int = 0
    read_timeouts: int = 0


def _response(status: bytes, error: str, detail: str) -> bytes:
    body = f'{{"error":"{error}","detail":"{detail}"}}'.encode()
    return b"".join((
        b"HTTP/1.1 ", status, b"\r\ncontent-type: application/json\r\nconnection: close\r\n",
        b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body,
    ))  # fmt: skip


class EdgeProtocol(HttpToolsProtocol):
    """Answers 431 when a request's line and headers pass `max_header_bytes`, and 408 when a request is not
    fully read `read_timeout_s` seconds after its first bytes; either way the connection is closed.

    The limits are class-wide: each worker sets them once from its Settings (configure) before serving.
    """

    max_header_bytes: ClassVar[int] = 32 * 1024
    read_timeout_s: ClassVar[float] = 10.0
    stats: ClassVar[EdgeStats] = EdgeStats()

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.max_header_bytes = settings.max_header_bytes
        cls.read_timeout_s = settings.read_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True  # between two requests, or inside a request's line and headers
        self._in_body = False
        self._header_bytes = 0
        self._completed = False  # a request ended during the current read
        self._deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self._completed = False
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
                self._refuse(b"431 Request Header Fields Too Large", "headers_too_large",
                             f"the request line and headers exceed {self.max_header_bytes} bytes")  # fmt: skip
                return
        # Only a request split over several reads gets a deadline; it runs from here, its first partial read.
        if self._deadline is None and (self._in_body or (self._in_headers and self._header_bytes)):
            self._deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._in_body = True
        super().on_headers_complete()

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
        self._refuse(b"408 Request Timeout", "request_timeout",
                     f"the request was not received within {self.read_timeout_s:g} s")  # fmt: skip

    def _refuse(self, status: bytes, error: str, detail: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app, if it already runs, must not answer after us
            self.cycle.message_event.set()
        self.transport.write(_response(status, error, detail))
        self.transport.close()
