"""Parquet objects: the one typed schema of raw and processed events, and the compact rows writers keep.

This module does not import pyarrow (~75 MB resident): `formats.ParquetWriter` only keeps rows, and its `finish`
hands them to pipeline.arrow, imported then. Export finishes its objects in the pipeline's worker process
(pipeline.offload), as processing renders there, so the process answering /collect never loads pyarrow, and a worker
that never writes or reads parquet never does.

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
    # Enrichment (docs/enrichment.md); NULL in rows stored before it.
    ("consent", "string"),
    ("bot", "bool"),
    ("bot_reason", "string"),
    ("browser_family", "string"),
    ("browser_version", "string"),
    ("os_family", "string"),
    ("os_version", "string"),
    ("device_type", "string"),
    ("country", "string"),
    ("region", "string"),
    ("city", "string"),
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


def row_of(event: dict[str, Any]) -> tuple[Any, ...]:
    """The event's values in SCHEMA order, event_data and extra as JSON text."""
    return tuple(json_text(event.get(name)) if name in JSON_COLUMNS else event.get(name) for name in NAMES)


def json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()
