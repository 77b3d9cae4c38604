"""What happened lately, kept small in Redis: counts over time and pod start durations.

The admin's chart needs claimed/ready/queue over the last hours, and the
waiting room needs "how long does a pod take to start" to give an honest
estimate. Both must agree across broker replicas, so they live in Redis, not
in one process: capped lists, one Lua call per sample, no scans.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis

from . import keys, redis_text

STARTS_KEPT = 20  # pod start durations kept per profile (enough for a median, quick to adapt)
HISTORY_SPAN = 8 * 3600.0  # how far back the chart can look
MAX_SAMPLES = 2000

_SAMPLE_LUA = resources.files("fleet").joinpath("lua", "history.lua").read_text()


@dataclass(frozen=True, slots=True)
class Sample:
    """One moment of a profile: pods by state and people waiting."""

    at: float
    warming: int
    ready: int
    claimed: int
    queue: int

    @classmethod
    def parse(cls, line: str) -> Sample | None:
        parts = line.split()
        if len(parts) != 5:
            return None
        try:
            return cls(float(parts[0]), *(int(p) for p in parts[1:]))
        except ValueError:
            return None


def samples_kept(interval: float) -> int:
    """How many samples cover HISTORY_SPAN at `interval` (bounded, so the list stays small)."""
    return max(10, min(MAX_SAMPLES, math.ceil(HISTORY_SPAN / max(interval, 1.0))))


class History:
    """Reads and writes the two series. Constructing it does no I/O."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._sample = redis.register_script(_SAMPLE_LUA)

    async def sample(self, profiles: Iterable[str], now: float, interval: float) -> int:
        """Append a sample per profile unless a replica did within the interval; how many written."""
        cap = samples_kept(interval)
        written = 0
        for profile in profiles:
            written += int(
                await self._sample(
                    keys=[
                        keys.history(profile),
                        *keys.pod_states(profile),
                        keys.queue(profile),
                    ],
                    args=[repr(now), interval, cap],
                )
            )
        return written

    async def series(self, profile: str, since: float = 0.0) -> list[Sample]:
        """Samples of a profile from `since` on, oldest first."""
        raw = redis_text.texts(await self.redis.lrange(keys.history(profile), 0, -1))
        out = [s for s in (Sample.parse(line) for line in raw) if s is not None and s.at >= since]
        out.reverse()
        return out

    async def note_start(self, profile: str, seconds: float) -> None:
        """Remember how long a pod took from creation to Ready."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(keys.starts(profile), f"{max(0.0, seconds):.2f}")
            pipe.ltrim(keys.starts(profile), 0, STARTS_KEPT - 1)
            await pipe.execute()

    async def recent_starts(self, profile: str) -> list[float]:
        raw = await self.redis.lrange(keys.starts(profile), 0, -1)
        out = []
        for value in raw:
            try:
                out.append(float(value))
            except ValueError:
                continue
        return out


def typical_start(seconds: list[float]) -> float | None:
    """The median recent start time: one slow image pull does not skew it. None: no data yet."""
    return statistics.median(seconds) if seconds else None
