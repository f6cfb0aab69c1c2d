"""What the GET pixel carries and gets: the event in its query string, and the transparent GIF it is answered with."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import orjson

from collector.errors import InvalidEvent

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1x1, transparent
GIF_HEADERS = (
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
)
MAX_QUERY_FIELDS = 64


def pixel_payload(query: bytes) -> dict[str, Any]:
    """The event a pixel URL carries: parameters named like the JSON fields, `eventData` as a JSON string.

    Parameters starting with `_` (cache busters) are left out; a repeated one keeps its last value.
    """
    try:
        pairs = parse_qsl(
            query.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS
        )
    except UnicodeDecodeError:
        raise InvalidEvent("the query string is not valid UTF-8") from None
    except ValueError:
        raise InvalidEvent(f"the query string has more than {MAX_QUERY_FIELDS} parameters") from None
    payload: dict[str, Any] = {name: value for name, value in pairs if not name.startswith("_")}
    data = payload.get("eventData")
    if data is not None:
        try:
            payload["eventData"] = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidEvent("`eventData` must be a JSON object (URL-encoded)") from None
    if payload.get("eventType") == "batch":
        raise InvalidEvent("a pixel carries one event, not a batch")
    return payload
