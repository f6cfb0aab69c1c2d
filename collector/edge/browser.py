"""The browser-only front doors of /collect: the GET pixel and the CORS preflight."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Scope, Send

from collector.errors import CollectorError, InvalidEvent, OriginMismatch
from collector.ingest.origins import host_of, origin_allowed, preflight_headers

if TYPE_CHECKING:
    from collector.services import Services

logger = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1x1, transparent
GIF_HEADERS = (
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
)
MAX_QUERY_FIELDS = 64


def pixel_payload(query: bytes) -> dict[str, Any]:
    """The event a pixel URL carries: parameters named like the JSON fields, `eventData` as a JSON string.

    Parameters starting with `_` (cache busters) are left out; a repeated one keeps its last value.
    """
    try:
        pairs = parse_qsl(
            query.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS
        )
    except UnicodeDecodeError:
        raise InvalidEvent("the query string is not valid UTF-8") from None
    except ValueError:
        raise InvalidEvent(f"the query string has more than {MAX_QUERY_FIELDS} parameters") from None
    payload: dict[str, Any] = {name: value for name, value in pairs if not name.startswith("_")}
    data = payload.get("eventData")
    if data is not None:
        try:
            payload["eventData"] = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidEvent("`eventData` must be a JSON object (URL-encoded)") from None
    if payload.get("eventType") == "batch":
        raise InvalidEvent("a pixel carries one event, not a batch")
    return payload


async def pixel(
    services: Services, scope: Scope, send: Send, user_agent: str | None, forwarded_for: str | None, origin: str | None
) -> None:
    """GET /collect: always the GIF (an <img> cannot retry); a rejection is counted and named in a header."""
    ingest = services.ingest
    query: bytes = scope.get("query_string", b"")
    client = scope.get("client")
    try:
        try:
            payload = pixel_payload(query)
        except CollectorError as exc:
            ingest.refused(exc, query)
            raise
        await ingest.collect_payload(
            payload, query, peer=client[0] if client else None, forwarded_for=forwarded_for,
            user_agent=user_agent, origin=origin,
        )  # fmt: skip
        outcome = (b"x-collector-status", b"accepted")
    except CollectorError as exc:
        outcome = (b"x-collector-rejected", exc.error.encode())
    except Exception:  # a bug: log it, and still answer the GIF
        logger.exception("Unexpected error in GET /collect")
        outcome = (b"x-collector-rejected", b"internal_error")
    await send({"type": "http.response.start", "status": 200, "headers": [*GIF_HEADERS, outcome]})
    await send({"type": "http.response.body", "body": GIF})


async def preflight(services: Services, origin: bytes | None, send: Send) -> None:
    """OPTIONS /collect: CORS headers for an authorized origin (its host or a parent domain), 403 otherwise."""
    ingest = services.ingest
    if origin is None:  # not a CORS preflight: just say what the endpoint allows
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", b"POST, GET, OPTIONS")]})
        await send({"type": "http.response.body", "body": b""})
        return
    host = host_of(origin)
    if not host or not await origin_allowed(services.authorizer, host):
        ingest.preflights["refused"] += 1
        raise OriginMismatch(f"origin {origin.decode('latin-1')[:200]} is not an authorized site")
    ingest.preflights["allowed"] += 1
    ingest.origins.add(origin)
    headers = preflight_headers(origin, services.settings.cors_max_age_s)
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
