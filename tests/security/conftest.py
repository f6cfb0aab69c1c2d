"""The hostile-internet suite (issue 11): each test is an attack that failed on the service before its fix.

Fast variants run in `make test`; long variants (marked `hostile`, HOSTILE_LONG=1) run in `make hostile`, which
prints the figures they measure (RSS growth, processing ms per MB, p99 under flood, idle sockets held).
"""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

F = TypeVar("F")

LONG = os.environ.get("HOSTILE_LONG") == "1"


def long_only(test: F) -> F:
    """Mark a long variant: it runs in `make hostile` and is skipped in `make test`."""
    skip = pytest.mark.skipif(not LONG, reason="long variant: make hostile (HOSTILE_LONG=1)")
    marked: F = pytest.mark.hostile(skip(test))
    return marked


def scale(fast: int, long: int) -> int:
    """How many requests (or bytes, sockets...) an attack test uses: `long` in `make hostile`, else `fast`."""
    return long if LONG else fast


def figure(name: str, value: object) -> None:
    """Print one measured figure on its own line (`make hostile` runs with -s and shows them)."""
    print(f"\nFIGURE {name}: {value}")
