"""pyarrow's side of parquet objects: the Arrow schema, writing rows as a zstd file, reading one back as events.

Imported only by pipeline.parquet's writer and pipeline.formats' reader, on first use (see pipeline.parquet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

# The C allocator, not pyarrow's default (mimalloc in these wheels), chosen before pyarrow loads: the default kept
# what each object's table had used, and the worker process peaked at 204 MB clearing a 1,000,000-row parquet
# backlog against 146 MB with this (deploy/bench/backlog.py). The worker does nothing else with Arrow.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.parquet import COLUMNS, JSON_COLUMNS, READ_BATCH_ROWS, ROW_GROUP_ROWS, ZSTD_LEVEL, Row, row_of

TIMESTAMP = pa.timestamp("us", tz="UTC")
_TYPES = {
    "int64": pa.int64(), "string": pa.string(), "json": pa.string(), "timestamp": TIMESTAMP, "bool": pa.bool_(),
}  # fmt: skip
SCHEMA = pa.schema([(name, _TYPES[kind]) for name, kind in COLUMNS])
# Text as export renders timestamps (to_char ... 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'): %S prints microseconds here.
_ISO = "%Y-%m-%dT%H:%M:%SZ"


def write_object(rows: list[Row], metadata_field: str, metadata: dict[str, Any]) -> bytes:
    """The rows as one parquet file: zstd, statistics, row groups of ROW_GROUP_ROWS, `metadata` as JSON under
    `metadata_field` in the key-value metadata."""
    schema = SCHEMA.with_metadata({metadata_field: orjson.dumps(metadata)})
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, compression="zstd", compression_level=ZSTD_LEVEL, write_statistics=True) as out:
        for start in range(0, len(rows), ROW_GROUP_ROWS):
            out.write_batch(_batch(rows[start : start + ROW_GROUP_ROWS], schema), ROW_GROUP_ROWS)
    body: bytes = sink.getvalue().to_pybytes()
    return body


def _batch(rows: list[Row], schema: pa.Schema) -> pa.RecordBatch:
    tuples = [row_of(orjson.loads(row)) if isinstance(row, bytes) else row for row in rows]
    columns = []
    for index, field in enumerate(schema):
        values = [row[index] for row in tuples]
        if field.name in JSON_COLUMNS:
            columns.append(pa.array(values, pa.string()))
        elif field.type == TIMESTAMP:
            columns.append(_timestamps(values))
        elif field.type == pa.int64():
            columns.append(pa.array([v if type(v) is int else None for v in values], pa.int64()))
        elif field.type == pa.bool_():
            columns.append(pa.array([v if type(v) is bool else None for v in values], pa.bool_()))
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


def iter_events(body: bytes, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The events of a parquet object in export's document shape, READ_BATCH_ROWS decoded at a time; only
    `columns` (those the file has) when given."""
    try:
        file = pq.ParquetFile(pa.BufferReader(body))
        if columns is not None:
            columns = [name for name in columns if name in file.schema_arrow.names]
        for batch in file.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
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


def record_batch(rows: list[Row]) -> pa.RecordBatch:
    """The rows (row_of tuples or export's encoded events) as one batch of SCHEMA (the Iceberg table's rows)."""
    return _batch(rows, SCHEMA)
