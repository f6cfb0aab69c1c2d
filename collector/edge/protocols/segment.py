"""Segment's HTTP Tracking API: /v1/track|page|screen|identify|group|alias|batch (and analytics.js's one-letter
paths), the write key as HTTP Basic user name (or the body's `writeKey`), Segment's answers."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import orjson
from starlette.types import Receive, Send

from collector.edge.protocols.front import Call, FrontDoor, answer
from collector.errors import CollectorError, MethodNotAllowed
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.mapping.segment import encode_message, map_message, messages_of
from collector.ingest.service import Ingest
from collector.ingest.writekeys import WriteKeys
from collector.settings import Settings

CALLS = ("track", "page", "screen", "identify", "group", "alias")
# Each path and the call it takes (None: a batch). analytics.js (analytics-next) posts to the first letter of the
# call, and to /v1/b when it batches.
PATHS: dict[str, str | None] = {
    **{f"/v1/{c}": c for c in CALLS}, **{f"/v1/{c[0]}": c for c in CALLS if c != "screen"}, "/v1/s": "screen",
    "/v1/batch": None, "/v1/b": None, "/v1/import": None,
}  # fmt: skip
SUCCESS = b'{"success":true}'
MAX_REMEMBERED_KEYS = 1024  # headers of at most 256 bytes: ~0.5 MB at most


class SegmentDoor(FrontDoor):
    """The Segment front door of one worker, with its write keys."""

    def __init__(self, settings: Settings, ingest: Ingest, authorizer: DomainAuthorizer, keys: WriteKeys) -> None:
        super().__init__(settings, ingest, authorizer)
        self.keys = keys
        # Authorization headers already decoded to their user name (a source sends the same one with every batch).
        self.users: dict[bytes, str] = {}

    async def handle(self, call: Call, receive: Receive, send: Send) -> int:
        if call.method != "POST":
            raise MethodNotAllowed("send Segment calls with POST", headers={"allow": "POST, OPTIONS"})
        body = await self.read_json(call, receive)
        given = self.users.get(call.authorization) if call.authorization is not None else None
        if given is None:
            given = _basic_user(call.authorization)
            if given is not None and len(call.authorization or b"") <= 256:  # a well-formed key's header is short
                if len(self.users) >= MAX_REMEMBERED_KEYS:
                    self.users.clear()
                self.users[call.authorization or b""] = given
        if given is None and type(body.get("writeKey")) is str:
            given = body["writeKey"]
        try:
            key = await self.keys.resolve(given)
            messages = messages_of(body, PATHS[call.path], self.max_events)
        except CollectorError as exc:
            self.ingest.refused(exc, _without_key(body))
            raise
        # A write key is never stored, logged or sampled to dead letters, wherever a client put it.
        messages = [m if type(m) is not dict or "writeKey" not in m else _without_key(m) for m in messages]
        mapper = functools.partial(map_message, received=call.received, key_domain=key.domain)
        encode = functools.partial(encode_message, self.encoder(), call.received, key.domain)
        groups, rejected = self.map_all(messages, encode, mapper)
        _, rejected = await self.ingest_mapped(call, groups, rejected, messages, mapper, client_id=key.client_id)
        body_out = SUCCESS if not rejected else orjson.dumps({"success": True, "events_rejected": rejected})
        await answer(send, 200, body_out, b"application/json", self.cors(call, success=True))
        return 200

    def error_body(self, exc: CollectorError) -> tuple[int, bytes, bytes]:
        """Segment's error shape ({"success": false, ...}) with our code; 422 is Segment's 400 (the SDKs drop a
        4xx batch and retry a 429 or 5xx one, as intended)."""
        body = {"success": False, "code": exc.error, "message": exc.detail, **(exc.extra or {})}
        return 400 if exc.status == 422 else exc.status, orjson.dumps(body), b"application/json"


def _without_key(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "writeKey"}


def _basic_user(header: bytes | None) -> str | None:
    """The user name of `Authorization: Basic base64(user:password)` (the write key), None without one."""
    if header is None:
        return None
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]
