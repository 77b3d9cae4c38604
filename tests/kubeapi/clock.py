"""Simulated time for the test cluster.

Every lifecycle delay in the simulator (pod start, readiness, grace periods,
autoscaler ticks, watch timeouts and bookmarks) goes through a `Clock`, so a
test can run a 90 s pod start in a fraction of a second (`ScaledClock`) or
step time by hand (`ManualClock`). Real processes started for pods run in real
time; only the simulated parts obey the clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Simulated time: seconds since the epoch, and sleeps in simulated seconds."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait until `event` is set or `seconds` simulated seconds pass; True if set."""
        ...


class ScaledClock:
    """Real time multiplied by `scale`: with scale=60 one simulated minute takes a second."""

    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._start = time.time() if start is None else start
        self._t0 = time.monotonic()

    def time(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.scale

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if seconds is None:
            await event.wait()
            return True
        try:
            async with asyncio.timeout(max(0.0, seconds) / self.scale):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True


class ManualClock:
    """Time moves only when a test calls `advance()`; sleepers wake in deadline order."""

    def __init__(self, start: float = 1_735_689_600.0) -> None:  # 2025-01-01T00:00:00Z
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    @property
    def pending(self) -> int:
        """How many sleepers are waiting for time to pass."""
        return sum(1 for _, _, fut in self._timers if not fut.done())

    def next_deadline(self) -> float | None:
        live = [t for t, _, fut in self._timers if not fut.done()]
        return min(live) if live else None

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if seconds is None:
            await event.wait()
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
        return event.is_set()

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move time forward, waking each sleeper at its deadline.

        After each wake-up the event loop runs `settle` times so that woken
        tasks can react (and schedule new sleeps) before time moves on.
        """
        target = self._now + seconds
        await _settle(settle)
        while self._timers and self._timers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._timers)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await _settle(settle)
        self._now = target
        await _settle(settle)


async def _settle(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def rfc3339(ts: float) -> str:
    """Kubernetes metav1.Time: second precision, UTC, trailing Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(ts: float) -> str:
    """metav1.MicroTime-style timestamp used by Agones' last-allocated annotation."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
