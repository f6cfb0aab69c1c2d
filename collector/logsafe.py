"""Client text made safe for a log line: control characters escaped and the whole cut to a bound.

Anything a client sent (a siteId, a header, a key, a client id from pixel-management) goes through `for_log`
before it reaches a log line, so a CR/LF cannot forge a line, a terminal escape cannot reach an operator's
screen, and a 1 MB value cannot become a 1 MB line.
"""

from __future__ import annotations

LOG_TEXT_CHARS = 200
ELLIPSIS = "…"

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators, each as a visible escape.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def for_log(value: object, limit: int = LOG_TEXT_CHARS) -> str:
    """`value` as printable text of at most `limit` characters (before escaping), `…` marking a cut."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: limit * 4]).decode("utf-8", errors="replace")
        cut = len(value) > limit * 4 or len(text) > limit
    else:
        text = value if isinstance(value, str) else repr(value)
        cut = len(text) > limit
    text = text[:limit].translate(_ESCAPES)
    return text + ELLIPSIS if cut else text
