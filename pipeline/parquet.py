"""Parquet objects (pyarrow): one typed schema for raw and processed events, zstd-compressed, scan-sized row groups.

Imported only where a parquet object is written or read (pipeline.formats imports it on first use), so a process
that never writes or reads parquet never loads pyarrow (~40 MB resident).

Both stages hand events over in export's document shape (timestamps as ISO 8601 text, event_data and extra as JSON
values), so a parquet raw object reads back as the very events a json one does and processing is the same whatever
the raw format. docs/pipeline.md#parquet documents the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TIMESTAMP = pa.timestamp("us", tz="UTC")
# In the table's column order. id is events_log's bigint (the manifest's id ranges); every other id is a string.
SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("event_id", pa.string()),
    ("event_type", pa.string()),
    ("session_id", pa.string()),
    ("visitor_id", pa.string()),
    ("site_id", pa.string()),
    ("client_id", pa.string()),
    ("event_timestamp", TIMESTAMP),
    ("url", pa.string()),
    ("path", pa.string()),
    ("referrer", pa.string()),
    ("user_agent", pa.string()),
    ("ip", pa.string()),
    ("ip_hash", pa.string()),
    ("event_data", pa.string()),  # JSON text: its keys are the sender's, no schema fits them all
    ("extra", pa.string()),  # JSON text
    ("received_at", TIMESTAMP),
])  # fmt: skip
JSON_COLUMNS = frozenset({"event_data", "extra"})
TIME_COLUMNS = frozenset(name for name in SCHEMA.names if SCHEMA.field(name).type == TIMESTAMP)
# An object holds at most EXPORT_BATCH_SIZE rows and EXPORT_MAX_OBJECT_BYTES (16 MiB) of encoded events, so with the
# defaults it is one row group: engines read a row group's column chunks in one request each, and splitting a 16 MiB
# object (a few MB compressed) further would only add requests and footer entries and compress worse. The cap keeps
# a writer's column buffers bounded if both limits are raised.
ROW_GROUP_ROWS = 128 * 1024
ZSTD_LEVEL = 3  # zstd's own default: near level 9's ratio on these columns at several times the speed
READ_BATCH_ROWS = 8192  # rows decoded into Python at a time when reading an object back
# Text as export renders timestamps (to_char ... 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'): %S prints microseconds here.
_ISO = "%Y-%m-%dT%H:%M:%SZ"


class ParquetWriter:
    """One parquet object's rows, kept compact as they come and typed and compressed when it finishes.

    An encoded event (export) is kept as its bytes, an event dict (processing) as a tuple of its column values with
    event_data and extra already JSON text: about what the json writer holds for the same events, bounded by the
    object limits. The columnar work happens once, in `finish`, which callers run off the event loop.
    """

    def __init__(self, metadata_field: str) -> None:
        self.metadata_field = metadata_field
        self.size = 0
        self.count = 0
        self._rows: list[bytes | tuple[Any, ...]] = []

    def add(self, event: bytes) -> None:
        self.size += len(event) + 1
        self.count += 1
        self._rows.append(event)

    def add_event(self, event: dict[str, Any]) -> None:
        self.count += 1
        self._rows.append(_row(event))

    def finish(self, metadata: dict[str, Any]) -> bytes:
        """The object's bytes; `metadata` goes into the file's key-value metadata under the writer's field name."""
        schema = SCHEMA.with_metadata({self.metadata_field: orjson.dumps(metadata)})
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(
            sink, schema, compression="zstd", compression_level=ZSTD_LEVEL, write_statistics=True
        ) as writer:
            rows, self._rows = self._rows, []
            for start in range(0, len(rows), ROW_GROUP_ROWS):
                writer.write_batch(_batch(rows[start : start + ROW_GROUP_ROWS], schema), ROW_GROUP_ROWS)
            del rows
        body: bytes = sink.getvalue().to_pybytes()
        return body


def _row(event: dict[str, Any]) -> tuple[Any, ...]:
    """The event's values in SCHEMA order, event_data and extra as JSON text."""
    return tuple(_json_text(event.get(name)) if name in JSON_COLUMNS else event.get(name) for name in SCHEMA.names)


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _batch(rows: list[bytes | tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    tuples = [_row(orjson.loads(row)) if isinstance(row, bytes) else row for row in rows]
    columns = []
    for index, field in enumerate(schema):
        values = [row[index] for row in tuples]
        if field.name in JSON_COLUMNS:
            columns.append(pa.array(values, pa.string()))
        elif field.name in TIME_COLUMNS:
            columns.append(_timestamps(values))
        elif field.type == pa.int64():
            columns.append(pa.array([v if type(v) is int else None for v in values], pa.int64()))
        else:
            columns.append(pa.array([_text(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _text(value: Any) -> str | None:
    """A string column's value: a string as it is, anything else (from a foreign raw object) as its JSON text."""
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value).decode()


def _timestamps(values: list[Any]) -> pa.Array:
    """ISO 8601 texts (export's, or any with an offset) as UTC microseconds; one that is not a time becomes null."""
    try:
        return pa.array(values, pa.string()).cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_parse_time(v) for v in values], TIMESTAMP)


def _parse_time(value: Any) -> datetime | None:
    if type(value) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None  # a time without a zone names no instant


def iter_events(body: bytes) -> Iterator[dict[str, Any]]:
    """The events of a parquet object in export's document shape, READ_BATCH_ROWS decoded at a time."""
    try:
        file = pq.ParquetFile(pa.BufferReader(body))
        for batch in file.iter_batches(batch_size=READ_BATCH_ROWS):
            names = batch.schema.names
            arrays = [
                pc.strftime(column, format=_ISO) if pa.types.is_timestamp(column.type) else column
                for column in batch.columns
            ]
            events = pa.RecordBatch.from_arrays(arrays, names=names).to_pylist()
            for event in events:
                for name in JSON_COLUMNS.intersection(event):
                    if event[name] is not None:
                        event[name] = orjson.loads(event[name])
                yield event
    except (pa.ArrowException, OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a parquet object: {exc}") from exc


def read_metadata(body: bytes, metadata_field: str) -> dict[str, Any] | None:
    """The metadata a writer stored under `metadata_field`, None if the file has none."""
    stored = pq.ParquetFile(pa.BufferReader(body)).schema_arrow.metadata or {}
    value = stored.get(metadata_field.encode())
    return None if value is None else dict(orjson.loads(value))
