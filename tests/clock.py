"""A fake monotonic clock for the objects that take a `clock` parameter: tests move time instead of sleeping."""

from __future__ import annotations


class FakeClock:
    """Returns `now` when called; advance() moves it forward."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
