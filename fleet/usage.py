"""GPU time per user or per group over a window: who used the GPUs, for budgets and bills.

Ended sessions come from the audit stream: end_pod.lua and drop_claim.lua write
one entry per session end they are told about (_tell.lua: user, groups at claim
time, profile, node, `session_seconds`, `at`). Sessions still running come from
the claimed sets and the claims (`groups`, kept by _write_claim.lua). Each session
counts for the part of it inside the window. By group, a session counts in full for
every group its user was in when it began; a session whose groups are unknown (made
before claims kept them, or through the admin API) counts under the group "".

The stream keeps ~10,000 entries (fleet/store/audit.py), about a week for 500
people: a window reaching further back sees only what is left. Ends no one was
told about (a scale-down has no user; a claim that failed to bind, a broker's
shutdown) have no entry, and their seconds are not here: the session_end log line
(fleet/store/pods.py) has every end, for a log sink.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from redis.asyncio import Redis

from . import keys, redis_text
from .model import PodInfo, groups_of
from .store import FleetStore

By = Literal["user", "group"]
READ_BATCH = 500  # audit entries per XRANGE
#: Entries are read from this long before the window: a session's entry id is the Redis
#: server's clock, `at` the caller's, and the two may differ by a little.
CLOCK_SLACK = 300.0


@dataclass(slots=True)
class Usage:
    """One user's or group's GPU time in the window."""

    key: str  # the user, or the group ("" = groups unknown)
    sessions: int = 0  # sessions with time in the window, ended or running
    running: int = 0  # of which still running
    seconds: dict[str, float] = field(default_factory=dict)  # profile -> pod-seconds

    def add(self, profile: str, seconds: float, *, running: bool) -> None:
        self.sessions += 1
        self.running += running
        self.seconds[profile] = self.seconds.get(profile, 0.0) + seconds


@dataclass(frozen=True, slots=True)
class Session:
    """A session's span, whoever ran it: what `usage` sums."""

    user: str
    groups: tuple[str, ...]
    profile: str
    start: float
    end: float
    running: bool


def _ended(entry: dict[str, str]) -> Session | None:
    """The session an audit entry ended, if it is a session end that says how long."""
    if not entry.get("user") or "session_seconds" not in entry:
        return None
    try:
        end = float(entry.get("at", ""))
        seconds = max(0.0, float(entry["session_seconds"]))
    except ValueError:
        return None
    groups = groups_of(entry.get("groups", ""))
    return Session(entry["user"], groups, entry.get("profile", ""), end - seconds, end, False)


async def ended_sessions(redis: Redis, since: float) -> list[Session]:
    """Sessions the audit stream holds that ended at or after `since`, oldest first."""
    low = f"{max(0, int((since - CLOCK_SLACK) * 1000))}-0"
    found: list[Session] = []
    while True:
        batch = redis_text.stream_entries(
            await redis.xrange(keys.AUDIT, min=low, max="+", count=READ_BATCH)
        )
        found += [s for _, e in batch if (s := _ended(e)) is not None and s.end >= since]
        if len(batch) < READ_BATCH:
            return found
        low = f"({batch[-1][0]}"


async def running_sessions(redis: Redis, pods: Iterable[PodInfo], now: float) -> list[Session]:
    """The sessions of these claimed pods, with the groups their claims keep."""
    claimed = [p for p in pods if p.user and p.claimed_at]
    async with redis.pipeline(transaction=False) as pipe:
        for pod in claimed:
            pipe.hmget(keys.claim(pod.user), ["pod", "groups"])
        replies = await pipe.execute()
    out = []
    for pod, (claim_pod, groups) in zip(claimed, replies, strict=True):
        mine = redis_text.text(claim_pod) == pod.id  # else a claim of another pod, or none
        known = groups_of(redis_text.text(groups) or "") if mine else ()
        out.append(Session(pod.user, known, pod.profile, pod.claimed_at, now, True))
    return out


def usage(sessions: Iterable[Session], since: float, until: float, by: By) -> list[Usage]:
    """Seconds of each user's or group's sessions inside [since, until], by profile; the
    most used first."""
    table: defaultdict[str, Usage] = defaultdict(lambda: Usage(""))
    for s in sessions:
        inside = min(s.end, until) - max(s.start, since)
        if inside < 0 or s.end < since or s.start > until:
            continue
        for key in (s.user,) if by == "user" else (s.groups or ("",)):
            row = table[key]
            row.key = key
            row.add(s.profile, inside, running=s.running)
    return sorted(table.values(), key=lambda u: (-sum(u.seconds.values()), u.key))


async def read_usage(
    store: FleetStore, profiles: Iterable[str], since: float, until: float, by: By
) -> list[Usage]:
    """GPU time (pod-seconds by profile) per user or group in [since, until]: the ends the
    audit stream holds, and the sessions running now."""
    names = list(profiles)
    async with store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrange(keys.claimed(name), 0, -1)
        claimed = [pod_id for ids in await pipe.execute() for pod_id in redis_text.texts(ids)]
    running = await running_sessions(store.redis, await store.pods_by_id(claimed), store.clock())
    return usage([*await ended_sessions(store.redis, since), *running], since, until, by)
