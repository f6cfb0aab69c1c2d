"""events_log rows in PostgreSQL's binary COPY format, encoded once at ingest and copied as bytes from then on.

Why not tuples handed to asyncpg: its encoder spent ~6.5 µs per 16-column row in Python-visible work
(timestamps via astimezone and timedelta, inet via ipaddress parsing), on the same core as the requests.
Encoded here, the columns that are the same for every event of a request (its site, client, user agent,
address, receive time, and for a batch the wrapper's inherited fields) are encoded once per request, and a
batch sub-event costs a few joins. The journal (storage/journal.py) stores these records as they are.

Format (PostgreSQL docs, "COPY ... BINARY"): a header, then per row a 16-bit field count and per field a
32-bit length (-1 for NULL) and the field's binary value, then a 16-bit -1 trailer.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from datetime import UTC, datetime, timedelta
from functools import lru_cache

# Column order of every record; chosen so that per-event fields come first and the per-request ones last.
EVENT_COLUMNS = ("event_id", "event_type", "event_data")
INHERITED_COLUMNS = ("session_id", "visitor_id", "url", "path", "referrer", "event_timestamp", "extra")
REQUEST_COLUMNS = ("site_id", "client_id", "user_agent", "ip", "ip_hash", "consent")
# Filled off the request loop, on storage's thread (collector.enrich): ingest encodes them as NULLs (ENRICH_NULLS),
# and the enricher replaces that fixed run of NULLs, which ends just before received_at, with the request's values.
ENRICH_COLUMNS = (
    "bot", "bot_reason", "browser_family", "browser_version", "os_family", "os_version", "device_type",
    "country", "region", "city",
)  # fmt: skip
# received_at last: it is never NULL, so every row ends in its fixed 12 bytes (RECEIVED_BYTES), and the per-request
# columns before it are one cached piece (the receive time changes with every request).
COLUMNS = EVENT_COLUMNS + INHERITED_COLUMNS + REQUEST_COLUMNS + ENRICH_COLUMNS + ("received_at",)

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
ROW_START = struct.pack(">h", len(COLUMNS))
NULL = struct.pack(">i", -1)
ENRICH_NULLS = NULL * len(ENRICH_COLUMNS)
UUID_LENGTH = struct.pack(">i", 16)
# What starts every row: its field count, then the event id's length (the id itself follows).
ROW_START_AND_UUID_LENGTH = ROW_START + UUID_LENGTH
TIMESTAMP_LENGTH = struct.pack(">i", 8)
RECEIVED_BYTES = len(TIMESTAMP_LENGTH) + 8
JSONB_VERSION = b"\x01"

_length = struct.Struct(">i").pack
int64 = struct.Struct(">q").pack
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
PG_EPOCH_UNIX_US = int(PG_EPOCH.timestamp()) * 1_000_000


class Unencodable(ValueError):
    """A value that PostgreSQL would refuse (e.g. text with a NUL or a lone surrogate)."""


def text(value: str | None) -> bytes:
    """A text field."""
    if value is None:
        return NULL
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise Unencodable("is not valid Unicode text") from None
    if b"\x00" in data:
        raise Unencodable("contains a NUL character")
    return _length(len(data)) + data


# Event types, session and visitor ids and paths repeat endlessly: encoding each distinct one once saves most
# of the encoding work of a row (a cache hit costs a dict lookup; the str caches its own hash). Callers pass only
# values of at most MAX_CACHED_TEXT_CHARS (and event types, at most 100), so an entry is at most ~0.9 KB (4-byte
# characters, key and encoded value) and the cache ~14 MB (~4 MB for ASCII text). Longer ones are rarely repeated.
MAX_CACHED_TEXT_CHARS = 64
cached_text = lru_cache(maxsize=16384)(text)


def boolean(value: bool | None) -> bytes:
    """A boolean field."""
    if value is None:
        return NULL
    return b"\x00\x00\x00\x01\x01" if value else b"\x00\x00\x00\x01\x00"


def upgrade(row: bytes) -> bytes:
    """A record of an older release (fewer columns: a journal written before an upgrade) with NULLs for the columns
    it lacks, so that it replays into today's COPY column list. New columns only ever go before received_at, which
    ends every record."""
    count: int = struct.unpack_from(">h", row)[0]
    if count >= len(COLUMNS):
        return row
    return ROW_START + row[2:-RECEIVED_BYTES] + NULL * (len(COLUMNS) - count) + row[-RECEIVED_BYTES:]


def timestamp(value: datetime) -> bytes:
    """A timestamptz field: microseconds since 2000-01-01 UTC. `value` must be timezone-aware."""
    return TIMESTAMP_LENGTH + int64((value - PG_EPOCH) // MICROSECOND)


def timestamp_ns(unix_ns: int) -> bytes:
    """A timestamptz field from nanoseconds since the Unix epoch (time.time_ns())."""
    return TIMESTAMP_LENGTH + int64(unix_ns // 1000 - PG_EPOCH_UNIX_US)


# JSONB_HEADER(len(json) + 1, JSONB_VERSION): the field's length and the version byte that precede its JSON.
JSONB_HEADER = struct.Struct(">ic").pack


def jsonb(json_text: bytes | None) -> bytes:
    """A jsonb field from serialized JSON."""
    if json_text is None:
        return NULL
    return _length(len(json_text) + 1) + JSONB_VERSION + json_text


# Keyed by a normalized address (at most 45 characters): at most 16,384 x ~0.3 KB = 5 MB.
@lru_cache(maxsize=16384)
def inet(address: str) -> bytes:
    """An inet field for a host address: family, prefix bits, is-cidr flag, length, address bytes."""
    packed = ipaddress.ip_address(address).packed
    value = bytes((2 if len(packed) == 4 else 3, len(packed) * 8, 0, len(packed))) + packed
    return _length(len(value)) + value


def payload(rows: list[bytes]) -> bytes:
    """The whole COPY input for these records."""
    return b"".join((HEADER, *rows, TRAILER))


# Byte maps that set the version (4) and variant (RFC 4122) bits of random UUIDs in C, not per byte in Python.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


class RandomIds:
    """Row heads (field count, uuid length, a random version-4 UUID) from a pool refilled 4,096 at a time: a
    urandom syscall per event would cost more than encoding the rest of its row, and a list pop is the cheapest
    way to hand one out."""

    POOL = 4096

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    def take(self) -> bytes:
        heads = self.heads
        if not heads:
            raw = bytearray(os.urandom(16 * self.POOL))
            raw[6::16] = raw[6::16].translate(_VERSION_4)
            raw[8::16] = raw[8::16].translate(_VARIANT)
            # Interleaved with the row start in 22 slice copies and cut by one struct call: a Python loop over
            # the 4,096 heads cost as much as the rest of a batch's encoding.
            size = len(ROW_START_AND_UUID_LENGTH)
            width = size + 16
            pool = bytearray(width * self.POOL)
            for offset, byte in enumerate(ROW_START_AND_UUID_LENGTH):
                pool[offset::width] = bytes((byte,)) * self.POOL
            for offset in range(16):
                pool[size + offset :: width] = raw[offset::16]
            heads.extend(_split_heads(pool))
        return heads.pop()


_split_heads = struct.Struct(f"{len(ROW_START_AND_UUID_LENGTH) + 16}s" * RandomIds.POOL).unpack
# One pool per process; ingest pops heads from ROW_IDS.heads itself in its hot loop and calls row_head() when empty.
ROW_IDS = RandomIds()
row_head = ROW_IDS.take
