"""People an admin blocked from WebUIs (keys.BLOCKED): no new session starts for them
until unblocked. Blocking also ends their session and logins (broker/admin/ops.py);
this is only the list, read on a route-cache miss (one SISMEMBER), never per request."""

from __future__ import annotations

from .. import keys, redis_text
from .base import StoreBase


class BlockStore(StoreBase):
    """Who is blocked."""

    async def block(self, user: str) -> bool:
        """Block USER; False when they were blocked already."""
        return bool(await self.redis.sadd(keys.BLOCKED, user))

    async def unblock(self, user: str) -> bool:
        """Unblock USER; False when they were not blocked."""
        return bool(await self.redis.srem(keys.BLOCKED, user))

    async def is_blocked(self, user: str) -> bool:
        return bool(await self.redis.sismember(keys.BLOCKED, user))

    async def blocked(self) -> set[str]:
        return set(redis_text.texts(await self.redis.smembers(keys.BLOCKED)))
