"""for_log: client text reaches a log line escaped and cut."""

from __future__ import annotations

from collector.logsafe import LOG_TEXT_CHARS, for_log


def test_line_breaks_and_terminal_escapes_are_escaped() -> None:
    """A CR/LF or an ANSI escape in client text cannot start a forged log line or drive a terminal."""
    logged = for_log("shop.com\r\nINFO forged line \x1b[31mred\u2028")
    assert "\n" not in logged and "\r" not in logged and "\x1b" not in logged and "\u2028" not in logged
    assert logged == "shop.com\\r\\nINFO forged line \\x1b[31mred\\u2028"


def test_a_huge_value_is_cut_with_a_mark() -> None:
    """A 1 MB value becomes at most the bound plus an ellipsis, for text and bytes alike."""
    assert for_log("a" * 1_000_000) == "a" * LOG_TEXT_CHARS + "…"
    assert for_log(b"\xff" * 1_000_000).endswith("…")
    assert len(for_log(b"b" * 1_000_000)) == LOG_TEXT_CHARS + 1


def test_short_plain_text_is_unchanged() -> None:
    """Ordinary values pass through as they are; non-strings are shown by repr."""
    assert for_log("client_acme_corp") == "client_acme_corp"
    assert for_log(None) == "None"
