"""Object formats: the seed's JSON document (metadata + events), gzipped NDJSON, or Parquet (pipeline.parquet).

Objects are built one event at a time (`open_writer`) and read back one event at a time where the format allows
(`iter_events`), so neither stage holds a second copy of an object's events while it writes or reads one. Parquet's
module (and pyarrow) is imported on first use only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from pipeline.parquet import Row, row_of

FORMATS = ("json", "ndjson.gz", "parquet")
CONTENT_TYPES = {
    "json": "application/json",
    "ndjson.gz": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
GZIP_LEVEL = 6
_GZIP_WBITS = 31  # a gzip member, with a zero mtime: the same rows give the same bytes (and checksum) on a retry
_READ_PIECE = 1024 * 1024  # decompressed bytes taken at a time when reading ndjson.gz


class UnreadableObject(ValueError):
    """An object's bytes do not decode as the format its key names."""


def format_of(key: str) -> str:
    for name in FORMATS:
        if key.endswith("." + name):
            return name
    raise UnreadableObject(f"{key}: unknown format (expected one of {', '.join(FORMATS)})")


class ObjectWriter(Protocol):
    """One object's bytes, built an event at a time; `count` events so far, `size` their encoded JSON bytes."""

    count: int
    size: int

    def add(self, event: bytes) -> None:
        """An event already encoded by orjson (export encodes its rows off the event loop)."""
        ...

    def add_event(self, event: dict[str, Any]) -> None:
        """An event as a dict (processing's redacted events), encoded as the format needs."""
        ...

    def finish(self, metadata: dict[str, Any]) -> bytes:
        """The object's bytes with `metadata`; CPU work for parquet, so callers run it off the event loop."""
        ...


def open_writer(fmt: str, metadata_field: str) -> ObjectWriter:
    return ParquetWriter(metadata_field) if fmt == "parquet" else JsonWriter(fmt, metadata_field)


def finish_object(writer: ObjectWriter, metadata: dict[str, Any]) -> bytes:
    """`writer.finish(metadata)`, as a module-level function the worker process (pipeline.offload) can run."""
    return writer.finish(metadata)


class JsonWriter:
    """A json or ndjson.gz object's bytes, built from events already encoded by orjson.

    json keeps the encoded events until `finish` puts the metadata in front (the document opens with it); ndjson.gz
    compresses each event as it comes, so it holds only compressed bytes. For ndjson.gz the metadata lives in the
    manifest only: each line is one event.
    """

    def __init__(self, fmt: str, metadata_field: str) -> None:
        if fmt not in ("json", "ndjson.gz"):
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.metadata_field = metadata_field
        self.size = 0
        self.count = 0
        self._pieces: list[bytes] = []  # ndjson.gz: compressed pieces
        # json: the events joined as they come. Not a list of them: orjson returns each event in a 4 KiB buffer
        # whatever its length, so 10,000 events of 500 bytes held 40 MB instead of 5 (a copy frees each buffer).
        self._events = bytearray()
        self._gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS) if fmt == "ndjson.gz" else None

    def add(self, event: bytes) -> None:
        self.size += len(event) + 1
        self.count += 1
        if self._gzip is None:
            if self._events:
                self._events += b","
            self._events += event
        else:
            self._pieces.append(self._gzip.compress(event + b"\n"))

    def add_event(self, event: dict[str, Any]) -> None:
        self.add(orjson.dumps(event))

    def finish(self, metadata: dict[str, Any]) -> bytes:
        if self._gzip is not None:
            self._pieces.append(self._gzip.flush())
            body = b"".join(self._pieces)
        else:
            head = b'{"' + self.metadata_field.encode() + b'":' + orjson.dumps(metadata) + b',"events":['
            body = b"".join((head, self._events, b"]}"))
        self._pieces, self._events = [], bytearray()
        return body


class ParquetWriter:
    """One parquet object's rows, kept compact as they come and typed and compressed when it finishes.

    An encoded event (export) is kept as its bytes, an event dict (processing) as a tuple of its column values with
    event_data and extra already JSON text: about what the json writer holds for the same events, bounded by the
    object limits. The columnar work happens once, in `finish`, which callers run in the worker process.
    """

    def __init__(self, metadata_field: str) -> None:
        self.metadata_field = metadata_field
        self.size = 0
        self.count = 0
        self._rows: list[Row] = []

    def add(self, event: bytes) -> None:
        self.size += len(event) + 1
        self.count += 1
        # A copy of its own size: orjson's bytes sit in a 4 KiB buffer whatever their length (see JsonWriter).
        self._rows.append(bytes(memoryview(event)))

    def add_event(self, event: dict[str, Any]) -> None:
        self.count += 1
        self._rows.append(row_of(event))

    def finish(self, metadata: dict[str, Any]) -> bytes:
        """The object's bytes; `metadata` goes into the file's key-value metadata under the writer's field name."""
        from pipeline.arrow import write_object  # pyarrow: here, on the first parquet object

        rows, self._rows = self._rows, []
        return write_object(rows, self.metadata_field, metadata)


def encode(fmt: str, metadata_field: str, metadata: dict[str, Any], events: list[dict[str, Any]]) -> bytes:
    """The object's bytes (the same as orjson.dumps({metadata_field: metadata, "events": events}) for json)."""
    writer = open_writer(fmt, metadata_field)
    for event in events:
        writer.add_event(event)
    return writer.finish(metadata)


def iter_events(fmt: str, body: bytes, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The events of an object written by `encode` or a writer; ndjson.gz is decompressed piece by piece, parquet
    decoded a batch of rows at a time, both in export's document shape. `columns`: the fields the caller reads, a
    hint that parquet uses to decode only those (other formats give every field)."""
    if fmt == "json":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UnreadableObject(f"not a json object: {exc}") from exc
        events = document.get("events") if isinstance(document, dict) else None
        if not isinstance(events, list):
            raise UnreadableObject("not a json object: `events` is not a list of objects")
        for event in events:
            if not isinstance(event, dict):
                raise UnreadableObject("not a json object: `events` is not a list of objects")
            yield event
    elif fmt == "ndjson.gz":
        for line in _gzip_lines(body):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UnreadableObject(f"not a ndjson.gz object: {exc}") from exc
            if not isinstance(event, dict):
                raise UnreadableObject("not a ndjson.gz object: a line is not a JSON object")
            yield event
    elif fmt == "parquet":
        from pipeline.arrow import iter_events as parquet_events  # pyarrow only where parquet is read

        try:
            yield from parquet_events(body, columns)
        except ValueError as exc:
            raise UnreadableObject(str(exc)) from exc
    else:
        raise UnreadableObject(f"unknown format {fmt!r}")


def decode_events(fmt: str, body: bytes) -> list[dict[str, Any]]:
    """The events of an object written by `encode`, as a list."""
    return list(iter_events(fmt, body))


def _gzip_lines(body: bytes) -> Iterator[bytes]:
    """The non-empty lines of a gzip stream (one member or several), never more than one piece decompressed."""
    data, partial = body, b""
    try:
        while data:
            inflater = zlib.decompressobj(_GZIP_WBITS)
            pending = data
            while not inflater.eof:
                piece = inflater.decompress(pending, _READ_PIECE)
                pending = inflater.unconsumed_tail
                if not piece and not pending:
                    raise UnreadableObject("not a ndjson.gz object: truncated gzip stream")
                lines = (partial + piece).split(b"\n")
                partial = lines.pop()
                yield from (line for line in lines if line)
            data = inflater.unused_data
    except zlib.error as exc:
        raise UnreadableObject(f"not a ndjson.gz object: {exc}") from exc
    if partial:
        yield partial
