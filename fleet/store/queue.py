"""The waiting line of each profile: served by priority (fleet.yaml's groups:), then first
come, first served (fleet/lua/_line.lua); a place is kept only while its tab is seen
(queue_seen), see drop_waiters.lua."""

from __future__ import annotations

from typing import NamedTuple

from .. import keys
from ..events import Event, Kind
from ..model import Queued
from .base import StoreBase

#: Seconds one step of priority moves a place in line: PRIORITY_STEP of fleet/lua/_line.lua,
#: which says why 2**24. The order key is join time - priority x PRIORITY_STEP.
PRIORITY_STEP = 2**24


class Waiter(NamedTuple):
    """One person in line: when they joined (unix seconds, as joined), last seen, and the
    priority they joined with."""

    user: str
    joined: float
    seen: float
    priority: int


def line_score(joined: float, priority: int) -> float:
    """The order key of a place in line, the same double _line.lua's line_score writes."""
    return joined - priority * PRIORITY_STEP


class QueueStore(StoreBase):
    """Who waits for which profile."""

    async def join_queue(self, user: str, profile: str, priority: int = 0) -> Queued:
        """Queue a user whose allocation found nothing Ready (Agones: the platform had none).

        `priority` counts only when they join now: a person already in line keeps their place.
        """
        now = self.clock()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.queue(profile), {user: now}, nx=True)
            pipe.zadd(keys.queue_order(profile), {user: line_score(now, priority)}, nx=True)
            pipe.zadd(keys.queue_seen(profile), {user: now})
            pipe.zrank(keys.queue_order(profile), user)
            pipe.zcard(keys.queue_order(profile))
            added, _, _, rank, length = await pipe.execute()
        if added:
            await self.publish(Event(Kind.QUEUE, profile, user))
        return Queued(profile, int(rank or 0) + 1, int(length))

    async def leave_queue(self, user: str, profile: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.queue(profile), user)
            pipe.zrem(keys.queue_seen(profile), user)
            pipe.zrem(keys.queue_order(profile), user)
            await pipe.execute()

    async def drop_gone_waiters(self, profile: str, grace: float) -> list[str]:
        """Forget the profile's waiting users unseen for longer than `grace` (drop_waiters.lua).

        Run by the controller on every pass, so a closed tab stops counting toward
        the target even when nobody else claims from that profile; the same pass puts
        in order anyone a broker that knows no order queued.
        """
        gone = await self.scripts.drop_waiters(
            keys=[keys.queue(profile), keys.queue_seen(profile), keys.queue_order(profile)],
            args=[repr(self.clock() - grace), profile],
        )
        return [str(user) for user in gone]

    async def see_waiting(self, user: str, profile: str) -> tuple[int, int] | None:
        """A waiting user is still there (an open events stream): keep their place.

        Returns (1-based position in serving order, line length), or None when they are
        no longer queued (they lost their place, or a claim took them out). The position
        grows when someone of a higher priority joins ahead of them. Someone a broker that
        knows no order queued is placed by join time until the order is mended.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.queue_seen(profile), {user: self.clock()}, xx=True)
            pipe.zrank(keys.queue_order(profile), user)
            pipe.zcard(keys.queue_order(profile))
            pipe.zrank(keys.queue(profile), user)
            pipe.zcard(keys.queue(profile))
            _, rank, length, joined_rank, joined_length = await pipe.execute()
        if rank is None:
            return None if joined_rank is None else (joined_rank + 1, joined_length)
        return rank + 1, length

    async def queue_members(self, profile: str) -> list[Waiter]:
        """Everyone waiting for `profile`, in the order they are served."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.queue_order(profile), 0, -1, withscores=True)
            pipe.zrange(keys.queue(profile), 0, -1, withscores=True)
            pipe.zrange(keys.queue_seen(profile), 0, -1, withscores=True)
            order, joined_at, seen = await pipe.execute()
        joined: dict[str, float] = dict(joined_at)
        last: dict[str, float] = dict(seen)
        # Not in order yet (queued by a broker that knows none): last, until the next pass.
        ranked = [u for u, _ in order if u in joined] + [u for u in joined if u not in dict(order)]
        keyed = dict(order)
        return [
            Waiter(
                user,
                joined[user],
                last.get(user, joined[user]),
                round((joined[user] - keyed[user]) / PRIORITY_STEP) if user in keyed else 0,
            )
            for user in ranked
        ]
