"""How long a waiting person will likely wait, from what the fleet is doing right now.

An honest estimate names what it waits for. For the n-th person in line, in
the order pods will reach them:

1. a Ready pod nobody took yet: now;
2. a pod already starting: the typical start time minus how long it has run;
3. a pod the controller will start (the profile is below max): a start time;
4. the fleet is at max: someone's session must end first. The earliest a
   session can end is its last activity + idle_timeout (or its max_session),
   so that is a lower bound; then a pod starts. Past that: unknown.

The typical start time is the median of recent pod starts (fleet.history).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keys, start_health
from .history import History, typical_start
from .spec import FleetSpec, Profile
from .store import FleetStore


@dataclass(frozen=True, slots=True)
class Outlook:
    """What waits for one profile depend on, read at one moment."""

    at: float
    ready: int
    warming_since: tuple[float, ...]  # creation times of starting pods, oldest first
    total: int
    max: int
    session_ends: tuple[float, ...]  # earliest end of each claimed session, soonest first
    typical_start: float | None
    failing: bool = False  # its starts keep failing (start_health): no pod may ever come


@dataclass(frozen=True, slots=True)
class Eta:
    """`seconds` None: no honest number yet (no pod has started lately, or nobody can leave)."""

    seconds: float | None
    phase: str  # "ready", "starting" or "full"


def estimate(outlook: Outlook, position: int) -> Eta:
    """The wait of the person at 1-based `position` in line."""
    k = max(1, position)
    if k <= outlook.ready:
        return Eta(0.0, "ready")
    k -= outlook.ready
    start = outlook.typical_start
    if k <= len(outlook.warming_since):
        if start is None:
            return Eta(None, "starting")
        age = outlook.at - outlook.warming_since[k - 1]
        return Eta(max(0.0, start - age), "starting")
    k -= len(outlook.warming_since)
    if k <= max(0, outlook.max - outlook.total):
        return Eta(start, "starting")
    k -= max(0, outlook.max - outlook.total)
    if k <= len(outlook.session_ends):
        free_in = max(0.0, outlook.session_ends[k - 1] - outlook.at)
        return Eta(free_in + (start or 0.0), "full")
    return Eta(None, "full")


async def read_outlook(
    store: FleetStore, history: History, spec: FleetSpec, profile: Profile, now: float
) -> Outlook:
    """Read one profile's outlook in four round trips (`profile` at its effective sizes)."""
    name = profile.name
    redis = store.redis
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.ready(name))
        pipe.zrange(keys.warming(name), 0, -1, withscores=True)
        pipe.zrange(keys.claimed(name), 0, -1, withscores=True)
        ready, warming, claimed = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for pod_id, _ in claimed:
            pipe.hget(keys.pod(pod_id), "user")
        users = await pipe.execute() if claimed else []
    starts = await history.recent_starts(name)
    failing = (await start_health.read(redis, [name]))[name].failing
    activity = await store.last_activity([u for u in users if u])
    ends = []
    for (_, claimed_at), user in zip(claimed, users, strict=True):
        end = activity.get(user or "", claimed_at) + spec.idle_timeout
        limit = spec.session_limit(name)
        if limit is not None:
            end = min(end, claimed_at + limit)
        ends.append(max(end, now))
    return Outlook(
        at=now,
        ready=int(ready),
        warming_since=tuple(sorted(score for _, score in warming)),
        total=int(ready) + len(warming) + len(claimed),
        max=profile.max,
        session_ends=tuple(sorted(ends)),
        typical_start=typical_start(starts),
        failing=failing,
    )
