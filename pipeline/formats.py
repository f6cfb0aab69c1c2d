"""Object formats: the seed's JSON document (metadata + events) or gzipped NDJSON, both readable by DuckDB."""

from __future__ import annotations

import gzip
from typing import Any

import orjson

FORMATS = ("json", "ndjson.gz")
CONTENT_TYPES = {"json": "application/json", "ndjson.gz": "application/x-ndjson"}


class UnreadableObject(ValueError):
    """An object's bytes do not decode as the format its key names."""


def format_of(key: str) -> str:
    for name in FORMATS:
        if key.endswith("." + name):
            return name
    raise UnreadableObject(f"{key}: unknown format (expected one of {', '.join(FORMATS)})")


def encode(fmt: str, metadata_field: str, metadata: dict[str, Any], events: list[dict[str, Any]]) -> bytes:
    """The object's bytes. For ndjson.gz the metadata lives in the manifest only: each line is one event."""
    if fmt == "json":
        return orjson.dumps({metadata_field: metadata, "events": events})
    if fmt == "ndjson.gz":
        lines = b"".join(orjson.dumps(event) + b"\n" for event in events)
        # mtime=0: the same rows give the same bytes (and checksum) on a retry.
        return gzip.compress(lines, compresslevel=6, mtime=0)
    raise ValueError(f"unknown format {fmt!r}")


def decode_events(fmt: str, body: bytes) -> list[dict[str, Any]]:
    """The events of an object written by `encode`."""
    try:
        if fmt == "json":
            document = orjson.loads(body)
            events = document["events"] if isinstance(document, dict) else None
        elif fmt == "ndjson.gz":
            events = [orjson.loads(line) for line in gzip.decompress(body).splitlines() if line]
        else:
            raise UnreadableObject(f"unknown format {fmt!r}")
    except (orjson.JSONDecodeError, OSError, EOFError, KeyError) as exc:
        raise UnreadableObject(f"not a {fmt} object: {exc}") from exc
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise UnreadableObject(f"not a {fmt} object: `events` is not a list of objects")
    return events
