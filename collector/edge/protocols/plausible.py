"""Plausible's events API: POST /api/event, `domain` as the site, answered 202 `ok` as Plausible does."""

from __future__ import annotations

import orjson
from starlette.types import Receive, Send

from collector.edge.protocols.front import Call, FrontDoor, answer
from collector.errors import CollectorError, MethodNotAllowed
from collector.ingest.mapping.plausible import map_event

PATHS = ("/api/event",)


class PlausibleDoor(FrontDoor):
    """The Plausible front door of one worker (Plausible has no keys: the domain and the Origin rules decide)."""

    async def handle(self, call: Call, receive: Receive, send: Send) -> int:
        if call.method != "POST":
            raise MethodNotAllowed("send Plausible events with POST", headers={"allow": "POST, OPTIONS"})
        body = await self.read_json(call, receive)
        try:
            mapped = map_event(body)
        except CollectorError as exc:
            self.ingest.refused(exc, body)
            raise
        await self.ingest_mapped(call, list(enumerate(mapped)), [], [body] * len(mapped))
        await answer(send, 202, b"ok", b"text/plain; charset=utf-8", self.cors(call, success=True))
        return 202

    def error_body(self, exc: CollectorError) -> tuple[int, bytes, bytes]:
        """Plausible's error shape ({"errors": {...}}), with our code beside it."""
        body = {"errors": {"request": [exc.detail]}, "error": exc.error}
        return exc.status, orjson.dumps(body), b"application/json"
