"""Parquet objects: the one typed schema of raw and processed events, and the writer that collects their rows.

This module does not import pyarrow (~40 MB resident): `ParquetWriter` only keeps rows, and `finish` hands them to
pipeline.arrow, imported then. Export finishes its objects in the pipeline's worker process (pipeline.offload), as
processing renders there, so the process answering /collect never loads pyarrow, and a worker that never writes or
reads parquet never does.

Both stages hand events over in export's document shape (timestamps as ISO 8601 text, event_data and extra as JSON
values), so a parquet raw object reads back as the very events a json one does and processing is the same whatever
the raw format. docs/pipeline.md#parquet documents the schema.
"""

from __future__ import annotations

from typing import Any

import orjson

# In the table's column order, with their Arrow types (pipeline.arrow builds the schema from these). id is events_log's
# bigint (the manifest's id ranges); every other id is a string; timestamps are timestamp[us, UTC].
COLUMNS = (
    ("id", "int64"),
    ("event_id", "string"),
    ("event_type", "string"),
    ("session_id", "string"),
    ("visitor_id", "string"),
    ("site_id", "string"),
    ("client_id", "string"),
    ("event_timestamp", "timestamp"),
    ("url", "string"),
    ("path", "string"),
    ("referrer", "string"),
    ("user_agent", "string"),
    ("ip", "string"),
    ("ip_hash", "string"),
    ("event_data", "json"),  # JSON text: its keys are the sender's, no schema fits them all
    ("extra", "json"),  # JSON text
    ("received_at", "timestamp"),
)
NAMES = tuple(name for name, _ in COLUMNS)
JSON_COLUMNS = frozenset(name for name, kind in COLUMNS if kind == "json")
# An object holds at most EXPORT_BATCH_SIZE rows and EXPORT_MAX_OBJECT_BYTES (16 MiB) of encoded events, so with the
# defaults it is one row group: engines read a row group's column chunks in one request each, and splitting a 16 MiB
# object (a few MB compressed) further would only add requests and footer entries and compress worse. The cap keeps
# a writer's column buffers bounded if both limits are raised.
ROW_GROUP_ROWS = 128 * 1024
ZSTD_LEVEL = 3  # zstd's own default: near level 9's ratio on these columns at several times the speed
READ_BATCH_ROWS = 8192  # rows decoded into Python at a time when reading an object back

Row = bytes | tuple[Any, ...]


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
        self._rows.append(event)

    def add_event(self, event: dict[str, Any]) -> None:
        self.count += 1
        self._rows.append(row_of(event))

    def finish(self, metadata: dict[str, Any]) -> bytes:
        """The object's bytes; `metadata` goes into the file's key-value metadata under the writer's field name."""
        from pipeline.arrow import write_object  # pyarrow: here, on the first parquet object

        rows, self._rows = self._rows, []
        return write_object(rows, self.metadata_field, metadata)


def row_of(event: dict[str, Any]) -> tuple[Any, ...]:
    """The event's values in SCHEMA order, event_data and extra as JSON text."""
    return tuple(json_text(event.get(name)) if name in JSON_COLUMNS else event.get(name) for name in NAMES)


def json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()
