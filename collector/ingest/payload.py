"""The /collect body as a JSON object, and the nesting limit checked on the parts that are stored or refused."""

from __future__ import annotations

from typing import Any

import orjson

from collector.errors import InvalidJson

MAX_JSON_DEPTH = 32


def parse_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or InvalidJson (400)."""
    if not body:
        raise InvalidJson("the body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if type(payload) is not dict:
        raise InvalidJson("the body must be a JSON object")
    # Fewer brackets than the limit cannot nest deeper than it. Past that, walking the whole tree costs more
    # than the rest of the request, so the depth is checked per value instead: on every eventData and unknown
    # field as it is serialized (see EventParser._json), and on anything rejected (see check_depth).
    return payload


def check_depth(value: Any, depth: int) -> None:
    """Raise InvalidJson (400) if `value`, standing at `depth` in the body (the root is 1), nests past the limit."""
    kind = type(value)
    if (kind is dict or kind is list) and _depth_exceeds(value, MAX_JSON_DEPTH - depth + 1):
        raise InvalidJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _depth_exceeds(root: Any, limit: int) -> bool:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
