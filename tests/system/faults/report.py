"""The figures each fault case measured, printed as it ends and again as a table at the end of the run."""

from __future__ import annotations

from typing import Any

COLUMNS = ("acked", "stored", "lost", "dups", "journal_peak_bytes", "rss_peak_mb", "recovery_s")

FIGURES: list[tuple[str, dict[str, Any]]] = []


def record(case: str, **figures: Any) -> None:
    FIGURES.append((case, figures))
    print(f"\n[faults] {case}: " + " ".join(f"{k}={_fmt(v)}" for k, v in figures.items()), flush=True)


def table() -> list[str]:
    """One line per case: the common columns, then whatever else the case measured."""
    width = max((len(case) for case, _ in FIGURES), default=4)
    lines = [f"{'case':<{width}}  " + "  ".join(COLUMNS) + "  other"]
    for case, figures in FIGURES:
        common = "  ".join(f"{_fmt(figures.get(c, '-')):>{len(c)}}" for c in COLUMNS)
        other = " ".join(f"{k}={_fmt(v)}" for k, v in figures.items() if k not in COLUMNS)
        lines.append(f"{case:<{width}}  {common}  {other}")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
