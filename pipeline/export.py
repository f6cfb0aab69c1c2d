"""Stage 1: rows of events_log, in id order up to a safe bound, into raw objects; the manifest in raw_objects.

Rows are read in chunks of CHUNK_ROWS and an object ends at `batch_size` rows or `max_object_bytes` encoded bytes,
whichever comes first: however large the backlog (or its rows), a run holds one chunk of rows and one object.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from pipeline import offload
from pipeline.formats import CONTENT_TYPES, ObjectWriter, finish_object, open_writer
from pipeline.objects import ObjectStore, ObjectStoreError
from pipeline.offload import OffloadFailed
from pipeline.status import export_watermark

logger = logging.getLogger(__name__)

RAW_PREFIX = "raw-events/"
SETTLE_POLL_S = 0.05
# Rows read per query: at most CHUNK_ROWS, and about CHUNK_BYTES (or one object, if smaller) by the size of the rows
# read so far, so that a backlog of large (amplified) rows is read a few MB at a time.
CHUNK_ROWS = 250
CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_OBJECT_BYTES = 16 * 1024 * 1024

# Text and timestamps as PostgreSQL renders them in UTC ISO 8601; jsonb as its own text, embedded unparsed.
_COLUMNS = """
    id, event_id::text AS event_id, event_type, session_id, visitor_id, site_id, client_id,
    to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS event_timestamp,
    url, path, referrer, user_agent, host(ip) AS ip, ip_hash, event_data::text AS event_data, extra::text AS extra,
    to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS received_at,
    consent, bot, bot_reason, browser_family, browser_version, os_family, os_version, device_type,
    country, region, city
"""
_ROWS_AFTER = f"SELECT {_COLUMNS} FROM events_log WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"


class ExportStalled(Exception):
    """The manifest and the table disagree (a claimed range's rows changed): exporting stops until looked at."""


@dataclass(slots=True)
class ExportResult:
    objects: int = 0
    rows: int = 0
    keys: list[str] = field(default_factory=list)
    watermark: int = 0
    waiting_for_xid: str | None = None  # transactions older than this were still running: newer rows wait


def raw_key(created: datetime, first_id: int, last_id: int, fmt: str) -> str:
    """raw-events/YYYY/MM/DD/raw_export_YYYYMMDD_HHMMSS_<first>-<last>.<fmt>: one key per id range."""
    return f"{RAW_PREFIX}{created:%Y/%m/%d}/raw_export_{created:%Y%m%d_%H%M%S}_{first_id}-{last_id}.{fmt}"


def event_document(row: asyncpg.Record) -> dict[str, Any]:
    """One exported event, snake_case as in the table; jsonb columns embedded as the JSON they are."""
    event = dict(row)
    for name in ("event_data", "extra"):
        value = event[name]
        event[name] = None if value is None else orjson.Fragment(value)
    return event


@dataclass(slots=True)
class _Encoded:
    """One row as it goes into an object: its id, receive time and encoded event."""

    id: int
    received_at: str
    event: bytes


def _encode_rows(rows: list[asyncpg.Record]) -> list[_Encoded]:
    return [_Encoded(row["id"], row["received_at"], orjson.dumps(event_document(row))) for row in rows]


@dataclass(slots=True)
class _Object:
    """The rows of one raw object, encoded into its writer as they are read."""

    writer: ObjectWriter
    first_id: int = 0
    last_id: int = 0
    start: str = ""
    end: str = ""

    def add(self, row: _Encoded) -> None:
        if self.writer.count == 0:
            self.first_id, self.start, self.end = row.id, row.received_at, row.received_at
        self.writer.add(row.event)
        self.last_id = row.id
        self.start, self.end = min(self.start, row.received_at), max(self.end, row.received_at)


class Exporter:
    """Exports with a connection the caller holds the export lock on (pipeline.scheduler): one exporter at a time.

    Safe bound: rows are exported up to the id sequence's value L read at the start of a run, once every
    transaction that could hold an id <= L has ended. A writer takes its transaction id before its first row id,
    so any such transaction's id is below X = pg_snapshot_xmax read right after L; when the oldest running
    transaction (pg_snapshot_xmin) is >= X, every row with id <= L is committed and visible, or rolled back for
    good. Several flushers committing out of order therefore cannot make a run skip a row that commits later.

    Exactly once: a range is claimed in raw_objects (key, ids) before its upload and marked exported, with the
    watermark moved, only after it; a run first finishes claimed ranges, re-reading the same rows into the same
    key. A failed upload leaves the claim for the next run; nothing is skipped or written under a second key.
    """

    def __init__(
        self,
        objects: ObjectStore,
        *,
        fmt: str,
        batch_size: int,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        settle_timeout_s: float = 10.0,
    ) -> None:
        self.objects = objects
        self.fmt = fmt
        self.batch_size = batch_size
        self.max_object_bytes = max_object_bytes
        self.settle_timeout_s = settle_timeout_s
        self._row_bytes = 64 * 1024  # the largest encoded row seen lately (a large first guess): sizes a chunk

    async def run(self, conn: asyncpg.Connection) -> ExportResult:
        """Export everything safely exportable now; raises ObjectStoreError (nothing marked) if an upload fails."""
        result = ExportResult()
        for claim in await conn.fetch(
            "SELECT key, range_start, first_id, last_id, row_count, created_at FROM raw_objects"
            " WHERE exported_at IS NULL ORDER BY range_start"
        ):
            # The claimed range again, chunk by chunk: the same rows give the same object under the same key.
            obj = _Object(open_writer(self.fmt, "export_metadata"))
            after = claim["range_start"] - 1
            while rows := await self._chunk(conn, after, claim["last_id"], CHUNK_ROWS):
                for row in rows:
                    obj.add(row)
                after = rows[-1].id
            if obj.writer.count != claim["row_count"]:
                raise ExportStalled(
                    f"{claim['key']}: claimed {claim['row_count']} rows, the table now holds {obj.writer.count}"
                    " in its range"
                )
            await self._upload(conn, claim["key"], obj, claim["created_at"], result)
        bound, result.waiting_for_xid = await self.safe_bound(conn)
        while True:
            watermark = await export_watermark(conn)
            result.watermark = watermark
            if watermark >= bound:
                break
            new = await self._next_object(conn, watermark, bound)
            if new is None:
                break  # ids up to the bound that never became rows (rolled back): the next object's range covers them
            created = datetime.now(UTC).replace(microsecond=0)
            key = raw_key(created, new.first_id, new.last_id, self.fmt)
            await conn.execute(
                "INSERT INTO raw_objects (key, range_start, first_id, last_id, row_count, format, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                key, watermark + 1, new.first_id, new.last_id, new.writer.count, self.fmt, created,
            )  # fmt: skip
            await self._upload(conn, key, new, created, result)
        return result

    async def _next_object(self, conn: asyncpg.Connection, watermark: int, bound: int) -> _Object | None:
        """Rows after the watermark up to `batch_size` rows or `max_object_bytes` bytes (at least one row)."""
        obj = _Object(open_writer(self.fmt, "export_metadata"))
        after = watermark
        while obj.writer.count < self.batch_size and obj.writer.size < self.max_object_bytes:
            rows = await self._chunk(conn, after, bound, min(CHUNK_ROWS, self.batch_size - obj.writer.count))
            if not rows:
                break
            for row in rows:
                if obj.writer.count and obj.writer.size + len(row.event) > self.max_object_bytes:
                    return obj  # the rest of the chunk starts the next object
                obj.add(row)
            after = rows[-1].id
        return obj if obj.writer.count else None

    async def _chunk(self, conn: asyncpg.Connection, after: int, upto: int, limit: int) -> list[_Encoded]:
        """Up to `limit` rows after id `after`, fewer when the rows read lately were large."""
        by_size = min(CHUNK_BYTES, self.max_object_bytes) // self._row_bytes
        rows = await conn.fetch(_ROWS_AFTER, after, upto, max(1, min(limit, by_size)))
        if not rows:
            return []
        # Serializing is pure Python work: off the event loop that answers /collect.
        encoded = await asyncio.to_thread(_encode_rows, rows)
        self._row_bytes = max(256, max(len(row.event) for row in encoded))
        return encoded

    async def safe_bound(self, conn: asyncpg.Connection) -> tuple[int, str | None]:
        """The highest id safe to export now (see the class docstring), and the xid still waited on, if any."""
        last = await conn.fetchval("SELECT pg_sequence_last_value('events_log_id_seq')")
        if last is None:
            return 0, None  # no row was ever inserted
        xmax = int(await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())"))
        deadline = time.monotonic() + self.settle_timeout_s
        while not await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8", xmax):
            if time.monotonic() >= deadline:
                logger.warning(
                    "Export waits for transactions older than %s (still running after %.0f s); rows after the"
                    " last export stay for the next run",
                    xmax, self.settle_timeout_s,
                )  # fmt: skip
                return 0, str(xmax)
            await asyncio.sleep(SETTLE_POLL_S)
        return int(last), None

    async def _upload(
        self, conn: asyncpg.Connection, key: str, obj: _Object, created: datetime, result: ExportResult
    ) -> None:
        rows = obj.writer.count
        metadata = {
            "export_id": key.rsplit("/", 1)[-1].split(".", 1)[0],
            "export_time": created.isoformat().replace("+00:00", "Z"),
            "event_count": rows,
            "format": self.fmt,
            "pipeline_stage": "raw",
            "id_range": {"first": obj.first_id, "last": obj.last_id},
            "time_range": {"start": obj.start, "end": obj.end},
        }
        if self.fmt == "parquet":
            # Typing and compressing the whole object is CPU work, and pyarrow ~75 MB: both in the pipeline's worker
            # process (offload), so the process answering /collect never holds its GIL for it or imports it.
            try:
                body = await offload.run(finish_object, obj.writer, metadata)
            except OffloadFailed as exc:  # as an upload that failed: nothing marked, the next run writes it again
                raise ObjectStoreError(f"{key}: not written, {exc}") from exc
        else:
            body = await asyncio.to_thread(obj.writer.finish, metadata)  # a join: off the event loop all the same
        await self.objects.put(key, body, CONTENT_TYPES[self.fmt])
        async with conn.transaction():
            await conn.execute(
                "UPDATE raw_objects SET exported_at = now(), checksum = $2, bytes = $3 WHERE key = $1",
                key, hashlib.sha256(body).hexdigest(), len(body),
            )  # fmt: skip
            moved = await conn.execute(
                "UPDATE export_state SET watermark = $1, updated_at = now() WHERE watermark < $1", obj.last_id
            )
            if moved != "UPDATE 1":
                raise ExportStalled(f"{key}: the watermark is already past {obj.last_id}")
        result.objects += 1
        result.rows += rows
        result.keys.append(key)
        result.watermark = obj.last_id
        logger.info("Successfully uploaded %d events to raw %s: %s", rows, self.objects.destination, key)
