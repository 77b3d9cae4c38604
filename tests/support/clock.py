"""A clock the test moves: what a store, budget or cache is given instead of time.time."""

from __future__ import annotations


class StepClock:
    """Stands still until the test sets `now` or calls `advance`."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
