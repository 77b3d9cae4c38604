"""Failing pod starts per profile, kept in Redis: what admins and waiting users are told.

The leading controller counts starts that failed in a row (a WebUI that exits
while starting, one that never passes its probe, a pod the platform refused to
create) with the last error; a pod becoming Ready sets the count to 0. It was
kept only in the leader's memory, so a profile that crash-looped 11 times in
72 s showed 0 warming, 0 ready and no error everywhere (issue 17, item 2). In
Redis (one small hash per profile) every replica's console, API, `fleet
status` and waiting page say the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from . import keys

#: Failed starts in a row, none Ready since, after which a profile counts as failing: one
#: failure may be bad luck (a node, a pull), two of the same profile in a row rarely are.
FAILING_AFTER = 2
CRASHED, START_TIMEOUT, CREATE_FAILED = "crashed", "start_timeout", "create_failed"
REASONS = (CRASHED, START_TIMEOUT, CREATE_FAILED)  # the metric's bounded `reason` label
ERROR_MAX = 300  # characters of an error kept (a backend's message may be long)


@dataclass(frozen=True, slots=True)
class StartHealth:
    """A profile's recent starts: `failures_in_row` since the last pod that became Ready."""

    failures_in_row: int = 0
    last_reason: str = ""
    last_error: str = ""
    last_failure_at: float | None = None

    @property
    def failing(self) -> bool:
        return self.failures_in_row >= FAILING_AFTER


async def note_failure(redis: Redis, profile: str, reason: str, error: str, now: float) -> int:
    """One more failed start; the count in a row (one round trip)."""
    key = keys.start_failures(profile)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, "in_row", 1)
        pipe.hset(key, mapping={"reason": reason, "error": error[:ERROR_MAX], "at": repr(now)})
        count, _ = await pipe.execute()
    return int(count)


async def note_started(redis: Redis, profile: str) -> None:
    """A pod became Ready: the profile starts again (the last error stays, for admins)."""
    await redis.hset(keys.start_failures(profile), "in_row", 0)


async def read(redis: Redis, profiles: Iterable[str]) -> dict[str, StartHealth]:
    """Each profile's start health (an empty one when it never failed)."""
    names = list(profiles)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.start_failures(name))
        rows = await pipe.execute() if names else []
    out = {}
    for name, row in zip(names, rows, strict=True):
        at = row.get("at")
        out[name] = StartHealth(
            failures_in_row=int(row.get("in_row") or 0),
            last_reason=row.get("reason", ""),
            last_error=row.get("error", ""),
            last_failure_at=float(at) if at else None,
        )
    return out
