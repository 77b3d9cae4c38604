"""The waiting queue of each profile: first come, first served; a place is kept
only while its tab is seen (queue_seen), see drop_waiters.lua."""

from __future__ import annotations

from .. import keys
from ..events import Event, Kind
from ..model import Queued
from .base import StoreBase


class QueueStore(StoreBase):
    """Who waits for which profile."""

    async def join_queue(self, user: str, profile: str) -> Queued:
        """Queue a user whose allocation found nothing Ready (first come, first served)."""
        now = self.clock()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.queue(profile), {user: now}, nx=True)
            pipe.zadd(keys.queue_seen(profile), {user: now})
            pipe.zrank(keys.queue(profile), user)
            pipe.zcard(keys.queue(profile))
            added, _, rank, length = await pipe.execute()
        if added:
            await self.publish(Event(Kind.QUEUE, profile, user))
        return Queued(profile, int(rank or 0) + 1, int(length))

    async def leave_queue(self, user: str, profile: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.queue(profile), user)
            pipe.zrem(keys.queue_seen(profile), user)
            await pipe.execute()

    async def drop_gone_waiters(self, profile: str, grace: float) -> list[str]:
        """Forget the profile's waiting users unseen for longer than `grace` (drop_waiters.lua).

        Run by the controller on every pass, so a closed tab stops counting toward
        the target even when nobody else claims from that profile.
        """
        gone = await self.scripts.drop_waiters(
            keys=[keys.queue(profile), keys.queue_seen(profile)],
            args=[repr(self.clock() - grace), profile],
        )
        return [str(user) for user in gone]

    async def see_waiting(self, user: str, profile: str) -> tuple[int, int] | None:
        """A waiting user is still there (an open events stream): keep their place.

        Returns (1-based position, queue length), or None when they are no
        longer queued (they lost their place, or a claim took them out).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.queue_seen(profile), {user: self.clock()}, xx=True)
            pipe.zrank(keys.queue(profile), user)
            pipe.zcard(keys.queue(profile))
            _, rank, length = await pipe.execute()
        return None if rank is None else (rank + 1, length)

    async def queue_members(self, profile: str) -> list[tuple[str, float, float]]:
        """(user, joined, last seen) of everyone waiting for `profile`, first come first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.queue(profile), 0, -1, withscores=True)
            pipe.zrange(keys.queue_seen(profile), 0, -1, withscores=True)
            joined, seen = await pipe.execute()
        last = dict(seen)
        return [(user, at, last.get(user, at)) for user, at in joined]
