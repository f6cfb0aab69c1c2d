"""Plausible's events API: POST /api/event, `domain` as the site, answered 202 `ok` as Plausible does."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Send

from collector.edge.protocols.front import Call, FrontDoor, answer, groups
from collector.errors import CollectorError, MethodNotAllowed
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.mapping.common import Mapped
from collector.ingest.mapping.plausible import encode_event, map_event
from collector.ingest.mapping.rows import DirectGroup, Encoded, Fallback
from collector.ingest.service import Ingest
from collector.settings import Settings

PATHS = ("/api/event",)


class PlausibleDoor(FrontDoor):
    """The Plausible front door of one worker (Plausible has no keys: the domain and the Origin rules decide)."""

    stamps = False  # an event's time is its receive time, which Ingest takes

    def __init__(self, settings: Settings, ingest: Ingest, authorizer: DomainAuthorizer) -> None:
        super().__init__(settings, ingest, authorizer)
        self.limits = self.encoder()  # one for every request: a single event's encoding uses no cache of it

    async def handle(self, call: Call, receive: Receive, send: Send) -> int:
        if call.method != "POST":
            raise MethodNotAllowed("send Plausible events with POST", headers={"allow": "POST, OPTIONS"})
        body = await self.read_json(call, receive)
        mapped: list[Encoded] | list[Mapped]
        try:
            try:
                if not self.encodes:
                    raise Fallback
                mapped = encode_event(body, self.limits)
            except Fallback:
                mapped = map_event(body)
        except CollectorError as exc:
            self.ingest.refused(exc, body)
            raise
        if len(mapped) == 1 and type(encoded := mapped[0]) is tuple:  # one site (the usual): one group, no grouping
            domain, _, _, _, _ = encoded
            assert domain is not None
            await self.hand_over(call, DirectGroup(domain, None, None, [encoded], [0]), [body], _one_event, None)
        else:
            await self.ingest_mapped(call, groups(list(enumerate(mapped))), [], [body] * len(mapped), _one_event)
        await answer(send, 202, b"ok", b"text/plain; charset=utf-8", self.cors(call, success=True))
        return 202

    def error_body(self, exc: CollectorError) -> tuple[int, bytes, bytes]:
        """Plausible's error shape ({"errors": {...}}), with our code beside it."""
        body = {"errors": {"request": [exc.detail]}, "error": exc.error}
        return exc.status, orjson.dumps(body), b"application/json"


def _one_event(body: Any) -> Mapped:
    """The /collect event of a Plausible body (the same for each of its sites, which only the batch names)."""
    return map_event(body)[0]
