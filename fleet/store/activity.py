"""Session activity: one sorted set scored by last activity (written in batches,
never per request), and the sessions found generating."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .. import keys, redis_text
from .base import StoreBase


class ActivityStore(StoreBase):
    """When each claimed user was last active."""

    async def touch(self, seen: Mapping[str, float]) -> None:
        """Record last activity for claimed users in one command (never for released ones)."""
        if seen:
            await self.redis.zadd(keys.ACTIVITY, dict(seen), xx=True, gt=True)

    async def last_activity(self, users: list[str]) -> dict[str, float]:
        """Last recorded activity of each user that has one."""
        scores = await self.redis.zmscore(keys.ACTIVITY, users) if users else []
        return {u: float(s) for u, s in zip(users, scores, strict=True) if s is not None}

    async def activity_of(self, user: str) -> tuple[float | None, bool]:
        """One user's last recorded activity (None: none yet) and whether the reaper last
        found their WebUI generating (keys.BUSY), in one round trip (the home page)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(keys.ACTIVITY, user)
            pipe.hexists(keys.BUSY, user)
            last, busy = await pipe.execute()
        return (None if last is None else float(last)), bool(busy)

    async def note_busy(
        self, seen: Mapping[str, float], busy: Mapping[str, str], done: Iterable[str]
    ) -> None:
        """One round trip: activity `seen` (users -> when), sessions found generating
        (`busy`: user -> pod) and those whose generation has ended (`done`)."""
        done = list(done)
        async with self.redis.pipeline(transaction=False) as pipe:
            if seen:
                pipe.zadd(keys.ACTIVITY, dict(seen), xx=True, gt=True)
            if busy:
                pipe.hset(keys.BUSY, mapping=redis_text.fields(dict(busy)))
            if done:
                pipe.hdel(keys.BUSY, *done)
            await pipe.execute()
