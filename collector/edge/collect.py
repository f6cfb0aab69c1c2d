"""CollectEndpoint: /collect (and its alias) as raw ASGI, built once by the lifespan with what it needs.

POST (fetch, sendBeacon, servers) answers JSON; GET is the pixel, answered with a GIF whatever happened (an <img>
cannot retry); OPTIONS is the CORS preflight. Every method hands the events to Ingest, which knows nothing of
HTTP: this module owns the headers, the CORS state and the bodies of the answers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from starlette.types import Receive, Scope, Send

from collector.edge.bodies import ClientDisconnected, read_body
from collector.edge.browser import GIF, GIF_HEADERS, pixel_payload
from collector.edge.cors import RememberedOrigins, cors_headers, preflight_headers
from collector.errors import (
    INTERNAL_ERROR_BODY,
    CollectorError,
    MethodNotAllowed,
    OriginMismatch,
    UnsupportedMediaType,
    render,
)
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.origins import host_of, origin_allowed
from collector.ingest.proxies import SIGNAL_HEADERS, Signals
from collector.ingest.service import Accepted, Ingest
from collector.settings import Settings

logger = logging.getLogger(__name__)

JSON_TYPES = frozenset((b"application/json", b"text/plain"))
ALLOW = {"allow": "POST, GET, OPTIONS"}


class CollectEndpoint:
    """The one /collect endpoint of a worker: its dependencies and its edge state (the origins that passed a CORS
    check, the preflight counts), and the success body's constant parts, encoded once."""

    def __init__(self, settings: Settings, ingest: Ingest, authorizer: DomainAuthorizer) -> None:
        self.ingest = ingest
        self.authorizer = authorizer
        self.max_body_bytes = settings.max_body_bytes
        self.cors_max_age_s = settings.cors_max_age_s
        durable = settings.ack_mode == "durable"
        # A success's status, decided once: 200 in both modes unless BUFFERED_SUCCESS_STATUS asks 202 for buffered
        # acks (the body's `ack` tells the two promises apart either way).
        self.success_status = 200 if durable else settings.buffered_success_status
        # The seed's fields in the seed's order, with `ack` (what the answer promises) after the message. Joining
        # bytes costs less per request than building and serializing a dict, whose sixth key would also double
        # its table.
        verb = "stored" if durable else "queued"
        self._body_head = b'{"status":"success","message":"'
        self._body_middle = f' event(s) received and {verb}","ack":"{settings.ack_mode}","events_processed":'.encode()
        self._last_millis = (0, b"")
        self.origins = RememberedOrigins()
        self.preflights: Counter[str] = Counter()  # CORS preflights "allowed" / "refused" (not events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:  # noqa: C901
        """Answer one /collect request; return its status (for the request counters; 499 when the client left).
        The header scan and the POST branch are inline on purpose: a dict of the headers and the page's host in a
        function cost 2,500 instructions per request more (callgrind, as docs/performance.md measures)."""
        origin = None
        try:
            content_type = content_length = user_agent = forwarded_for = encoding = referer = fetch_site = hints = None
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value
                elif name == b"content-length":
                    content_length = value
                elif name == b"user-agent":
                    user_agent = value.decode("latin-1")
                elif name == b"origin":
                    origin = value
                elif name == b"referer":
                    referer = value
                elif name == b"x-forwarded-for":
                    forwarded_for = value.decode("latin-1")
                elif name == b"content-encoding":
                    encoding = value
                elif name == b"sec-fetch-site":
                    fetch_site = value
                elif name in SIGNAL_HEADERS:  # Sec-GPC and a CDN's country: ingest reads them (proxies.py)
                    hints = (*(hints or ()), (name, value))
            # Browsers send Origin on every cross-origin POST; an <img> pixel sends only (maybe) a Referer.
            site_host = host_of(origin) if origin is not None else None if referer is None else host_of(referer)
            # A page can hide both (referrerpolicy), not that a browser sent the request (Fetch Metadata): such a
            # request names no page and matches no site. `none` is the user's own navigation, which no page can
            # cause: it is judged like a server's request (that user could send it with curl as well).
            if site_host is None and fetch_site is not None and fetch_site != b"none":
                site_host = ""
            if (method := scope["method"]) != "POST":
                return await self._not_post(method, scope, send, user_agent=user_agent, forwarded_for=forwarded_for,
                                            site_host=site_host, origin=origin, signals=hints)  # fmt: skip
            ingest = self.ingest
            try:
                if content_type is not None and content_type.split(b";", 1)[0].strip().lower() not in JSON_TYPES:
                    raise UnsupportedMediaType("send events as application/json or text/plain (JSON either way)")
                body = await read_body(receive, self.max_body_bytes, content_length, encoding)
            except CollectorError as exc:
                ingest.refused(exc, b"")
                raise
            client = scope.get("client")
            accepted = await ingest.collect(
                body, peer=client[0] if client else None, forwarded_for=forwarded_for, user_agent=user_agent,
                origin=site_host, signals=hints,
            )  # fmt: skip
            body, cors = self._success(accepted, origin)
            await _send_json(send, self.success_status, body, cors)
            return self.success_status
        except CollectorError as exc:
            return await self._refuse(send, exc, origin)
        except ClientDisconnected:
            return 499
        except Exception:  # a bug: log it, and tell the client nothing of it
            logger.exception("Unexpected error in /collect")
            await _send_json(send, 500, INTERNAL_ERROR_BODY, ())
            return 500

    async def _not_post(
        self,
        method: str,
        scope: Scope,
        send: Send,
        *,
        user_agent: str | None,
        forwarded_for: str | None,
        site_host: str | None,
        origin: bytes | None,
        signals: Signals | None = None,
    ) -> int:
        """GET (the pixel), OPTIONS (the preflight), or 405: the header values the scan found, by name."""
        if method == "GET":
            return await self._pixel(
                scope, send, user_agent=user_agent, forwarded_for=forwarded_for, site_host=site_host, signals=signals
            )
        if method == "OPTIONS":
            return await self._preflight(origin, send)
        raise MethodNotAllowed("use POST (or GET for the pixel) to send events", headers=ALLOW)

    def _success(self, accepted: Accepted, origin: bytes | None) -> tuple[bytes, Sequence[tuple[bytes, bytes]]]:
        """The success answer's body (the seed's) and CORS headers for a browser (whose origin is remembered)."""
        events, client_id, received_ns, rejected = accepted
        count = b"%d" % events
        body = b"".join((
            self._body_head, count, self._body_middle, count, b',"client_id":', orjson.dumps(client_id),
            b',"timestamp":"', self._iso_millis(received_ns),
            b'","events_rejected":' + orjson.dumps(rejected) + b"}" if rejected else b'"}',
        ))  # fmt: skip
        if origin is None:
            return body, ()
        self.origins.add(origin)
        return body, cors_headers(origin)

    def _iso_millis(self, unix_ns: int) -> bytes:
        """The receive time as the response's ISO 8601 text; formatted once per millisecond, not per request."""
        millis = unix_ns // 1_000_000
        last, text = self._last_millis
        if millis != last:
            iso = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
            text = iso.replace("+00:00", "Z").encode()
            self._last_millis = (millis, text)
        return text

    async def _refuse(self, send: Send, exc: CollectorError, origin: bytes | None) -> int:
        """The error answer (errors.render), with CORS headers for an origin that passed a check before."""
        headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        if origin is not None and origin in self.origins:
            headers += cors_headers(origin)
        if exc.status in (408, 413):
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await _send_json(send, exc.status, render(exc), headers)
        return exc.status

    async def _pixel(
        self,
        scope: Scope,
        send: Send,
        *,
        user_agent: str | None,
        forwarded_for: str | None,
        site_host: str | None,
        signals: Signals | None = None,
    ) -> int:
        """GET /collect: always the GIF (an <img> cannot retry); a rejection is counted and named in a header."""
        query: bytes = scope.get("query_string", b"")
        client = scope.get("client")
        try:
            try:
                payload = pixel_payload(query)
            except CollectorError as exc:
                self.ingest.refused(exc, query)
                raise
            await self.ingest.collect_payload(
                payload, query, peer=client[0] if client else None, forwarded_for=forwarded_for,
                user_agent=user_agent, origin=site_host, signals=signals,
            )  # fmt: skip
            outcome = (b"x-collector-status", b"accepted")
        except CollectorError as exc:
            outcome = (b"x-collector-rejected", exc.error.encode())
        except Exception:  # a bug: log it, and still answer the GIF
            logger.exception("Unexpected error in GET /collect")
            outcome = (b"x-collector-rejected", b"internal_error")
        await send({"type": "http.response.start", "status": 200, "headers": [*GIF_HEADERS, outcome]})
        await send({"type": "http.response.body", "body": GIF})
        return 200

    async def _preflight(self, origin: bytes | None, send: Send) -> int:
        """OPTIONS /collect: CORS headers for an authorized origin (its host or a parent domain), 403 otherwise."""
        if origin is None:  # not a CORS preflight: just say what the endpoint allows
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", b"POST, GET, OPTIONS")]})
            await send({"type": "http.response.body", "body": b""})
            return 204
        host = host_of(origin)
        if not host or not await origin_allowed(self.authorizer, host):
            self.preflights["refused"] += 1
            raise OriginMismatch(f"origin {origin.decode('latin-1')[:200]} is not an authorized site")
        self.preflights["allowed"] += 1
        self.origins.add(origin)
        headers = preflight_headers(origin, self.cors_max_age_s)
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 204


async def _send_json(send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})
