"""What every part of the store shares: the client, its scripts, the clock, events.

Constructing it does no I/O. The client is `connect_redis`'s, so a Redis out of
reach is `StoreUnavailable` on every call (fleet.redis_boundary).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from .. import keys
from ..events import Event
from ..scripts import Scripts

Clock = Callable[[], float]


def hash_of(flat: list[str]) -> dict[str, str]:
    """A flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class StoreBase:
    """Redis state of the fleet. Constructing it does no I/O."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock = time.time,
        on_claim: Callable[[str, float | None], None] | None = None,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.scripts = Scripts.register(redis)
        #: Called on every new claim with (profile, seconds waited in the queue or None);
        #: metrics use it, so it must not block.
        self.on_claim = on_claim

    async def publish(self, event: Event) -> None:
        await self.redis.publish(keys.EVENTS, event.encode())

    async def ping(self) -> None:
        await self.redis.ping()
