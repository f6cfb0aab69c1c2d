"""Snowplow's tracker protocol 2: POST /com.snowplowanalytics.snowplow/tp2 (payload_data) and GET /i (one event in
the query string, answered with a GIF), answered as Snowplow's collector does (200)."""

from __future__ import annotations

import functools
from urllib.parse import parse_qsl

from starlette.types import Receive, Send

from collector.edge.browser import GIF, GIF_HEADERS
from collector.edge.protocols.front import Call, FrontDoor, answer
from collector.errors import CollectorError, InvalidEvent, MethodNotAllowed, render
from collector.ingest.mapping.snowplow import encode_event, events_of, map_event

POST_PATH = "/com.snowplowanalytics.snowplow/tp2"
GET_PATH = "/i"
PATHS = (POST_PATH, GET_PATH)
MAX_QUERY_FIELDS = 256  # a tracker event has ~40 parameters


class SnowplowDoor(FrontDoor):
    """The Snowplow front door of one worker (no keys: `aid`'s domain and the Origin rules decide)."""

    allow = b"POST, GET, OPTIONS"

    async def handle(self, call: Call, receive: Receive, send: Send) -> int:
        if call.path == GET_PATH and call.method == "GET":
            return await self._get(call, send)
        if call.path != POST_PATH or call.method != "POST":
            raise MethodNotAllowed(f"use POST {POST_PATH} or GET {GET_PATH}", headers={"allow": "POST, GET, OPTIONS"})
        body = await self.read_json(call, receive)
        try:
            events = events_of(body, self.max_events)
        except CollectorError as exc:
            self.ingest.refused(exc, body)
            raise
        mapper = functools.partial(map_event, received=call.received)
        encode = functools.partial(encode_event, self.encoder(), call.received)
        groups, rejected = self.map_all(events, encode, mapper)
        await self.ingest_mapped(call, groups, rejected, events, mapper)
        await answer(send, 200, b"ok", b"text/plain; charset=utf-8", self.cors(call, success=True))
        return 200

    async def _get(self, call: Call, send: Send) -> int:
        """GET /i: the GIF, with a 2xx only for a stored event (the tracker retries anything else)."""
        try:
            params = dict(parse_qsl(call.query.decode("utf-8"), keep_blank_values=True,
                                    max_num_fields=MAX_QUERY_FIELDS))  # fmt: skip
        except (UnicodeDecodeError, ValueError):
            refused = InvalidEvent("the query string is not UTF-8 parameters (at most 256)")
            self.ingest.refused(refused, call.query)
            return await _gif(send, refused.status, (b"x-collector-rejected", refused.error.encode()))
        try:
            mapper = functools.partial(map_event, received=call.received)
            encode = functools.partial(encode_event, self.encoder(), call.received)
            groups, rejected = self.map_all([params], encode, mapper)
            await self.ingest_mapped(call, groups, rejected, [params], mapper)
        except CollectorError as exc:  # counted by the mapping or Ingest
            return await _gif(send, exc.status, (b"x-collector-rejected", exc.error.encode()))
        return await _gif(send, 200, (b"x-collector-status", b"accepted"))

    def error_body(self, exc: CollectorError) -> tuple[int, bytes, bytes]:
        return exc.status, render(exc), b"application/json"


async def _gif(send: Send, status: int, outcome: tuple[bytes, bytes]) -> int:
    """The pixel GIF (an <img> shows nothing either way), the status saying what happened, for trackers that retry."""
    await answer(send, status, GIF, b"image/gif", [*GIF_HEADERS[2:], outcome])
    return status
