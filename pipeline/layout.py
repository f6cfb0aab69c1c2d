"""Layout: where processed objects go, per format (json keeps the seed's folders; the others are Hive-style)."""

from __future__ import annotations

import re

from collector.logsafe import for_log
from pipeline.clients import valid_client_id
from pipeline.formats import FORMATS

PROCESSED_PREFIX = "processed-events/"
_RAW_KEY = re.compile(r"raw-events/([0-9]{4})/([0-9]{2})/([0-9]{2})/([^/]+?)\.(?:json|ndjson\.gz|parquet)")
# The seed's layout, kept for its format (json): readers written for the seed find processed objects where it put them.
SEED_LAYOUT_FORMATS = frozenset({"json"})
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class NotAKey(ValueError):
    """A processed key cannot be made: the raw key is not export's, or the client id or format is not usable."""


def raw_day(raw: str) -> str:
    """The raw object's day, YYYY-MM-DD, from its key."""
    match = _RAW_KEY.fullmatch(raw)
    if match is None:
        raise NotAKey(f"{for_log(raw)}: not a raw export key")
    year, month, day, _ = match.groups()
    return f"{year}-{month}-{day}"


def processed_key(raw: str, client_id: str, prefix: str = "", *, fmt: str = "json", day: str | None = None) -> str:
    """json: processed-events/<client>/YYYY/MM/DD/processed_<raw stem>.json, dated like the raw object. Other
    formats: processed-events/client_id=<client>/date=<day>/processed_<raw stem>.<fmt>, `day` (YYYY-MM-DD) the
    events' receive day, the raw object's when None."""
    match = _RAW_KEY.fullmatch(raw)
    if match is None:
        raise NotAKey(f"{for_log(raw)}: not a raw export key")
    if not valid_client_id(client_id):
        raise NotAKey(f"client id {for_log(client_id)} cannot be a path segment")
    if fmt not in FORMATS:
        raise NotAKey(f"unknown processed format {for_log(fmt)}")
    if day is not None and not _DAY.fullmatch(day):
        raise NotAKey(f"day {for_log(day)} is not YYYY-MM-DD")
    year, month, raw_date, stem = match.groups()
    if fmt in SEED_LAYOUT_FORMATS:
        return f"{prefix}{PROCESSED_PREFIX}{client_id}/{year}/{month}/{raw_date}/processed_{stem}.{fmt}"
    day = day or f"{year}-{month}-{raw_date}"
    return f"{prefix}{PROCESSED_PREFIX}client_id={client_id}/date={day}/processed_{stem}.{fmt}"
