"""CORS: the headers that let a page read /collect's answers, and the origins this worker has let through."""

from __future__ import annotations

from collector.ingest.origins import MAX_ORIGIN_BYTES

ALLOW_METHODS = b"POST, GET, OPTIONS"
ALLOW_HEADERS = b"content-type, content-encoding"
EXPOSE_HEADERS = b"retry-after"
# Origins that passed a check before: their error answers carry CORS headers too, so the tracker can read
# Retry-After. Bounded: at most this many values of at most MAX_ORIGIN_BYTES (~4 MB); cleared when full.
MAX_REMEMBERED_ORIGINS = 10_000


def cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", EXPOSE_HEADERS),
        (b"vary", b"origin"),
    ]


def preflight_headers(origin: bytes, max_age_s: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", str(max_age_s).encode()),
        (b"vary", b"origin"),
    ]


class RememberedOrigins:
    """Origin header values that passed a check in this worker, so that even their errors carry CORS headers."""

    def __init__(self, max_entries: int = MAX_REMEMBERED_ORIGINS) -> None:
        self._seen: set[bytes] = set()
        self._max = max_entries

    def add(self, origin: bytes) -> None:
        if origin not in self._seen and len(origin) <= MAX_ORIGIN_BYTES:
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen.add(origin)

    def __contains__(self, origin: bytes) -> bool:
        return origin in self._seen
