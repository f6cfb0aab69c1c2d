"""Configuration files in JSON: read one that must hold an object, with errors that name the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_json_object(path: Path, variable: str, shape: str) -> dict[str, Any]:
    """The JSON object in `path`; ValueError naming `variable` (and the expected `shape`) if it is not one."""
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"{variable} {path}: cannot be read as JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{variable} {path}: must map {shape}")
    return raw
