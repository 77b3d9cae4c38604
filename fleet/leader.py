"""A Redis leader lock with a TTL, so N broker replicas run one controller and one reaper."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from .scripts import Scripts


class LeaderLock:
    """Held while renewed more often than its TTL; lost silently when the holder dies."""

    def __init__(self, redis: Redis, scripts: Scripts, key: str, *, ttl: float) -> None:
        self.redis = redis
        self.scripts = scripts
        self.key = key
        self.ttl = ttl
        self.token = secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lock or renew it; True while we lead."""
        return bool(
            await self.scripts.leader(keys=[self.key], args=[self.token, int(self.ttl * 1000)])
        )

    async def release(self) -> None:
        await self.scripts.unlock(keys=[self.key], args=[self.token])
