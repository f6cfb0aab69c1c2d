"""Errors a client can cause or meet, each carrying its HTTP status and machine-readable code."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson


class CollectorError(Exception):
    """An expected failure, rendered as `{"error": code, "detail": text}` with `status`."""

    status: int = 400
    error: str = "bad_request"
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        if headers is not None:
            self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body: code and detail, plus any extra fields (e.g. the rejected events)."""
        return {"error": self.error, "detail": self.detail, **(self.extra or {})}


def render(exc: CollectorError) -> bytes:
    """The one place an error becomes the bytes of its answer; every path (the /collect fast path, Starlette's
    handlers, the protocol's refusals below the app) answers through it."""
    return orjson.dumps(exc.body())


class HttpError(CollectorError):
    """An HTTP-level failure Starlette raised (an unknown path, a method a route lacks), with its own status."""

    def __init__(self, status: int, error: str, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.status, self.error = status, error


class InternalError(CollectorError):
    """A bug: the client learns nothing of it (the traceback goes to the log)."""

    status, error = 500, "internal_error"


INTERNAL_ERROR_BODY = render(InternalError("internal error"))


class InvalidJson(CollectorError):
    status, error = 400, "invalid_json"


class Unauthenticated(CollectorError):
    status, error = 401, "unauthorized"
    headers: Mapping[str, str] = MappingProxyType({"www-authenticate": "Bearer"})


class Forbidden(CollectorError):
    status, error = 403, "forbidden"


class InvalidEncoding(CollectorError):
    status, error = 400, "invalid_encoding"


class OriginMismatch(CollectorError):
    """The request's Origin (or Referer) is not the event's authorized site nor one of its subdomains."""

    status, error = 403, "origin_mismatch"


class DomainNotAuthorized(CollectorError):
    status, error = 403, "domain_not_authorized"


class RequestTimeout(CollectorError):
    """Refused below the app: the request was not fully received within READ_TIMEOUT_S."""

    status, error = 408, "request_timeout"


class HeadersTooLarge(CollectorError):
    """Refused below the app: the request line and headers pass MAX_HEADER_BYTES."""

    status, error = 431, "headers_too_large"


class MethodNotAllowed(CollectorError):
    status, error = 405, "method_not_allowed"


class BodyTooLarge(CollectorError):
    status, error = 413, "body_too_large"


class UnsupportedMediaType(CollectorError):
    status, error = 415, "unsupported_media_type"


class InvalidEvent(CollectorError):
    status, error = 422, "invalid_event"


class InvalidSite(InvalidEvent):
    """The `siteId` (or the url's host) is not a host name (LDH labels of at most 63 bytes, 253 in all) nor an IP
    literal without a zone id: refused before any lookup, cache entry or log line."""

    status, error = 422, "invalid_site"


class RequestRowsTooLarge(CollectorError):
    """The rows one request would add to storage exceed MAX_REQUEST_ROW_BYTES (a small batch whose wrapper fields
    are copied into every event can otherwise multiply its size hundreds of times)."""

    status, error = 413, "request_rows_too_large"


class InvalidParameter(CollectorError):
    status, error = 422, "invalid_parameter"


class Unavailable(CollectorError):
    """503 with Retry-After: the client should send the same events again later."""

    status = 503
    retry_after_s = 1

    def __init__(self, detail: str, *, retry_after_s: int | None = None) -> None:
        seconds = self.retry_after_s if retry_after_s is None else retry_after_s
        super().__init__(detail, headers={"retry-after": str(seconds)})


class RateLimited(CollectorError):
    """429 with Retry-After: this client address or site sends faster than its token bucket refills."""

    status, error = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"retry-after": str(retry_after_s)})


class AuthorizationUnavailable(Unavailable):
    error = "authorization_unavailable"
    retry_after_s = 5


class TooManyConnections(Unavailable):
    """Refused below the app: the worker holds MAX_CONNECTIONS connections already."""

    error = "too_many_connections"


class BufferFull(Unavailable):
    error = "buffer_full"


class ShuttingDown(Unavailable):
    error = "shutting_down"


class DatabaseUnavailable(Unavailable):
    error = "database_unavailable"
    retry_after_s = 5


class InvalidWriteKey(CollectorError):
    """A front door that names its sender by write key (Segment's) got none, or one no client has: 401, as the
    SDKs expect."""

    status, error = 401, "invalid_write_key"
    headers: Mapping[str, str] = MappingProxyType({"www-authenticate": 'Basic realm="write key"'})


class WriteKeyMismatch(CollectorError):
    """The write key belongs to another client than the site whose events it sends."""

    status, error = 403, "write_key_mismatch"
