"""Heartbeats and fleet-wide counts in Redis, for the metrics every broker exports.

The leading controller, its passes and every reaper cycle (the in-broker one or a
CronJob's `python -m reaper --once`, which serves no metrics of its own) write the
time they last ran, and every session end is counted by profile and reason in
Redis: any replica's /_broker/metrics then shows the same values, and an alert on
"the reaper has not run for 5 minutes" holds whichever process reaps.
"""

from __future__ import annotations

from redis.asyncio import Redis

from . import keys, redis_text

LEADER = "controller_leader"  # the controller lock was held (taken or renewed)
CONTROLLER_PASS = "controller_pass"  # a full controller pass finished
REAPER = "reaper"  # a reap cycle finished (not a dry run)
COMPONENTS = (LEADER, CONTROLLER_PASS, REAPER)
_SEP = "\t"  # between profile and reason in a session-end count's field (end_pod.lua)


async def beat(redis: Redis, component: str, now: float) -> None:
    await redis.hset(keys.HEARTBEATS, component, repr(now))


async def read(redis: Redis) -> dict[str, float]:
    """component -> unix time it last ran (components that never ran are absent)."""
    raw = await redis.hgetall(keys.HEARTBEATS)
    return {k: float(v) for k, v in raw.items() if k in COMPONENTS}


async def session_ends(redis: Redis) -> dict[tuple[str, str], int]:
    """(profile, reason) -> sessions ended since this Redis began counting."""
    raw = redis_text.text_hash(await redis.hgetall(keys.SESSION_ENDS))
    out: dict[tuple[str, str], int] = {}
    for field, count in raw.items():
        profile, _, reason = field.partition(_SEP)
        out[(profile, reason)] = int(count)
    return out
