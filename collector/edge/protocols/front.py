"""FrontDoor: what every protocol endpoint shares — the header scan, the bounded body, the preflight, and the
hand-over of the mapped events to Ingest, one call per group (site, address, User-Agent): their rows, encoded by the
mapping (Ingest.collect_rows), or, for what the encoders leave to /collect's path, as /collect's batch."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from collector.edge.bodies import ClientDisconnected, read_body
from collector.edge.cors import RememberedOrigins, cors_headers
from collector.errors import CollectorError, InternalError, InvalidEvent, OriginMismatch, UnsupportedMediaType
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.mapping.common import Group, Mapped, MappingRejected
from collector.ingest.mapping.rows import DirectGroup, Encoded, Fallback, RowEncoder
from collector.ingest.origins import host_of, origin_allowed
from collector.ingest.payload import parse_body
from collector.ingest.service import Accepted, Ingest
from collector.settings import Settings

logger = logging.getLogger(__name__)
_UNSTAMPED = datetime(1970, 1, 1, tzinfo=UTC)  # Call.received of a door that reads no time

JSON_TYPES = frozenset((b"application/json", b"text/plain"))
Headers = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class Call:
    """One request's headers as the front doors use them (scanned once), and when it was received."""

    method: str
    path: str
    query: bytes
    peer: str | None
    received: datetime
    content_type: bytes | None = None
    content_length: bytes | None = None
    encoding: bytes | None = None
    authorization: bytes | None = None
    user_agent: str | None = None
    forwarded_for: str | None = None
    origin: bytes | None = None
    # The page's host (Origin, else Referer), "" for a browser request naming no page, None for a server's.
    site_host: str | None = None

    @classmethod
    def of(cls, scope: Scope, stamped: bool = True) -> Call:
        """The request's call; `stamped`: with its receive time (a door without times to correct skips the clock)."""
        client = scope.get("client")
        call = cls(scope["method"], scope["path"], scope.get("query_string", b""), client[0] if client else None,
                   datetime.now(UTC) if stamped else _UNSTAMPED)  # fmt: skip
        referer = fetch_site = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                call.content_type = value
            elif name == b"content-length":
                call.content_length = value
            elif name == b"content-encoding":
                call.encoding = value
            elif name == b"authorization":
                call.authorization = value
            elif name == b"user-agent":
                call.user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                call.forwarded_for = value.decode("latin-1")
            elif name == b"origin":
                call.origin = value
            elif name == b"referer":
                referer = value
            elif name == b"sec-fetch-site":
                fetch_site = value
        # The same rule as /collect's (edge.collect): Origin, else Referer; a browser hiding both names no page.
        origin = call.origin
        call.site_host = host_of(origin) if origin is not None else None if referer is None else host_of(referer)
        if call.site_host is None and fetch_site is not None and fetch_site != b"none":
            call.site_host = ""
        return call


class FrontDoor:
    """An endpoint of another protocol. Subclasses answer `handle` and render their protocol's answers."""

    allow = b"POST, OPTIONS"
    stamps = True  # whether its mapping reads the receive time (Call.received)
    # False: every message takes the /collect dict path, as before the direct encoders (the differential test's
    # reference: tests/collector/edge/test_protocol_rows.py).
    encodes = True

    def __init__(self, settings: Settings, ingest: Ingest, authorizer: DomainAuthorizer) -> None:
        self.ingest = ingest
        self.authorizer = authorizer
        self.max_body_bytes = settings.max_body_bytes
        self.max_events = settings.max_events_per_request
        self.cors_max_age_s = settings.cors_max_age_s
        self.origins = RememberedOrigins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one request; return its status (499 when the client left)."""
        call = Call.of(scope, self.stamps)
        try:
            if call.method == "OPTIONS":
                return await self._preflight(call, send)
            return await self.handle(call, receive, send)
        except CollectorError as exc:
            return await self.refuse(call, send, exc)
        except ClientDisconnected:
            return 499
        except Exception:  # a bug: log it, and tell the client nothing of it
            logger.exception("Unexpected error in %s", call.path)
            return await self.refuse(call, send, InternalError("internal error"))

    async def handle(self, call: Call, receive: Receive, send: Send) -> int:
        raise NotImplementedError

    def error_body(self, exc: CollectorError) -> tuple[int, bytes, bytes]:
        """The protocol's error answer: status, body, content type."""
        raise NotImplementedError

    async def read_json(self, call: Call, receive: Receive) -> dict[str, Any]:
        """The body as a JSON object, read within MAX_BODY_BYTES (gzip inflated under the same bound); counted."""
        try:
            content_type = call.content_type
            if (
                content_type is not None and content_type not in JSON_TYPES
                and content_type.split(b";", 1)[0].strip().lower() not in JSON_TYPES
            ):  # fmt: skip
                raise UnsupportedMediaType("send the events as application/json or text/plain (JSON either way)")
            body = await read_body(receive, self.max_body_bytes, call.content_length, call.encoding)
            return parse_body(body)
        except CollectorError as exc:
            self.ingest.refused(exc, b"")
            raise

    def reject(self, detail: str, message: Any) -> dict[str, Any]:
        """Count (and sample) one message the mapping refused; its entry in the answer's events_rejected."""
        self.ingest.refused(InvalidEvent(detail), message)
        return {"error": detail}

    def encoder(self) -> RowEncoder:
        """A request's row encoder, under /collect's limits."""
        parser = self.ingest.parser
        return RowEncoder(parser.max_event_bytes, parser.max_event_data_keys, parser.max_inherited_bytes)

    def map_all(
        self, messages: list[Any], encode: Callable[[Any], Encoded], mapper: Callable[[Any], Mapped]
    ) -> tuple[list[DirectGroup | Group], list[dict[str, Any]]]:
        """The messages in groups (as `groups`), each encoded as its row (`encode`) or, what that does not take on
        (rows.Fallback), mapped to a /collect event (`mapper`); the refused ones (counted) by index. Both refuse
        the same messages alike. Grouped here rather than by `groups`: a list of pairs between cost as much."""
        found: dict[tuple[str | None, str | None, str | None], DirectGroup | Group] = {}
        rejected = []
        direct = self.encodes
        last: DirectGroup | Group | None = None
        last_key: tuple[str | None, str | None, str | None] = (None, None, None)
        for index, message in enumerate(messages):
            m = None
            try:
                try:
                    if not direct:
                        raise Fallback
                    e = encode(message)
                except Fallback:
                    m = mapper(message)
            except MappingRejected as exc:
                rejected.append({"index": index, **self.reject(str(exc), message)})
                continue
            if m is None:
                # The usual next message: of the last one's group (the same site, address and agent objects: the
                # mappings' caches hand out the same strings), found without building or hashing a key.
                if e[0] is last_key[0] and e[1] is last_key[1] and e[2] is last_key[2] and type(last) is DirectGroup:
                    last.encoded.append(e)
                    last.indexes.append(index)
                    continue
                key = e[:3]
            else:
                key = (m.domain, m.ip, m.user_agent)
            domain, ip, agent = key
            if domain is None:
                rejected.append({"index": index, **self.reject("the event names no site", message)})
                continue
            g = last if key == last_key else found.get(key)
            if m is None:
                if g is None:
                    g = found[key] = DirectGroup(domain, ip, agent)
                if type(g) is DirectGroup:
                    g.encoded.append(e)
            elif type(g) is not Group:  # the group's first message that was not encoded: the whole group is not
                g = found[key] = Group(domain, ip, agent, indexes=g.indexes if g is not None else [])
            g.indexes.append(index)
            last, last_key = g, key
        return list(found.values()), rejected

    async def ingest_mapped(
        self,
        call: Call,
        groups: list[DirectGroup | Group],
        rejected: list[dict[str, Any]],
        messages: list[Any],
        mapper: Callable[[Any], Mapped],
        client_id: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Hand each group (site, address, User-Agent) to Ingest, its encoded rows (collect_rows) or, when one of its
        messages was not encoded, its /collect batch (collect_payload, the path of /collect itself); the events
        accepted and every rejection by index.

        A transient refusal (429, 5xx) is raised at once, so that the client resends everything (its resent events
        are taken once, by event id); a permanent one (4xx) names the group's events as rejected and the others go
        on. Nothing accepted: the first refusal is raised.
        """  # fmt: skip
        accepted, first = 0, None
        for g in groups:
            # All the request's messages (the usual single group) are the list itself.
            sample = messages if len(g.indexes) == len(messages) else [messages[i] for i in g.indexes]
            try:
                n, _, _, inner = await self.hand_over(call, g, sample, mapper, client_id)
            except CollectorError as exc:
                if exc.status >= 500 or exc.status == 429:
                    raise
                first = first or exc
                rejected += [{"index": i, "error": exc.detail, "code": exc.error} for i in g.indexes]
                continue
            accepted += n
            rejected += [{"index": g.indexes[r["index"]], "error": r["error"]} for r in inner]
        if not accepted:
            raise first or InvalidEvent("no event in the request is valid", extra={"events_rejected": rejected})
        return accepted, sorted(rejected, key=lambda r: r.get("index", -1)) if rejected else rejected

    async def hand_over(
        self, call: Call, g: DirectGroup | Group, sample: list[Any], mapper: Callable[[Any], Mapped],
        client_id: str | None,
    ) -> Accepted:  # fmt: skip
        """One group to Ingest: its rows, or its /collect batch."""
        payload_of = functools.partial(_payload, g.domain, g.ip, g.user_agent, sample, mapper)
        agent = g.user_agent or call.user_agent
        if type(g) is DirectGroup:
            return await self.ingest.collect_rows(
                g.domain, g.rows, payload_of, sample, peer=call.peer, forwarded_for=call.forwarded_for,
                user_agent=agent, origin=call.site_host, client_id=client_id, event_ip=g.ip,
            )  # fmt: skip
        return await self.ingest.collect_payload(
            payload_of(), sample, peer=call.peer, forwarded_for=call.forwarded_for, user_agent=agent,
            origin=call.site_host, client_id=client_id, event_ip=g.ip,
        )  # fmt: skip

    def cors(self, call: Call, *, success: bool) -> list[tuple[bytes, bytes]]:
        """CORS headers for a browser: after a success (Ingest checked its page), or for an origin seen before."""
        origin = call.origin
        if origin is None or not (success or origin in self.origins):
            return []
        if success:
            self.origins.add(origin)
        return [*cors_headers(origin), (b"access-control-allow-credentials", b"true")]

    async def refuse(self, call: Call, send: Send, exc: CollectorError) -> int:
        status, body, content_type = self.error_body(exc)
        headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()] + self.cors(call, success=False)
        if exc.status in (408, 413):
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await answer(send, status, body, content_type, headers)
        return status

    async def _preflight(self, call: Call, send: Send) -> int:
        """OPTIONS: CORS headers for an authorized origin (its host or a parent domain), 403 otherwise."""
        origin = call.origin
        if origin is None:
            await answer(send, 204, b"", b"text/plain", [(b"allow", self.allow)])
            return 204
        host = host_of(origin)
        if not host or not await origin_allowed(self.authorizer, host):
            raise OriginMismatch(f"origin {origin.decode('latin-1')[:200]} is not an authorized site")
        self.origins.add(origin)
        headers = [
            (b"access-control-allow-origin", origin), (b"access-control-allow-methods", self.allow),
            (b"access-control-allow-headers", b"content-type, content-encoding, authorization"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-max-age", str(self.cors_max_age_s).encode()), (b"vary", b"origin"),
        ]  # fmt: skip
        await answer(send, 204, b"", b"text/plain", headers)
        return 204


async def answer(send: Send, status: int, body: bytes, content_type: bytes, headers: Headers = ()) -> None:
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def groups(mapped: list[tuple[int, Encoded | Mapped]]) -> list[DirectGroup | Group]:
    """The messages by (site, address, User-Agent), in the order each group first appears: a DirectGroup of rows
    when every message of it was encoded, else a Group (its events are mapped again, as /collect dicts, by
    _payload)."""
    found: dict[tuple[str | None, str | None, str | None], DirectGroup | Group] = {}
    for index, m in mapped:
        if isinstance(m, Mapped):
            key = (m.domain, m.ip, m.user_agent)
            g = found.get(key)
            if type(g) is not Group:  # the group's first message that was not encoded: the whole group is not
                assert m.domain is not None
                g = found[key] = Group(m.domain, m.ip, m.user_agent, indexes=g.indexes if g is not None else [])
        else:
            key = m[:3]
            g = found.get(key)
            if g is None:
                domain, ip, agent = key
                assert domain is not None
                g = found[key] = DirectGroup(domain, ip, agent)
            if type(g) is DirectGroup:
                g.encoded.append(m)
        g.indexes.append(index)
    return list(found.values())


def _payload(
    domain: str, ip: str | None, agent: str | None, messages: list[Any], mapper: Callable[[Any], Mapped]
) -> dict[str, Any]:
    """A group's /collect batch: its messages mapped as /collect events (which they were, or would have been)."""
    return Group(domain, ip, agent, [mapper(m).event for m in messages]).payload()
