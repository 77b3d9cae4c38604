"""user -> pod, from a small in-process cache, else one Lua call.

The cache makes the common request cost zero Redis commands. It is kept
honest by pub/sub: a release anywhere drops the entry everywhere at once, and
a short TTL bounds the damage of a missed message. A proxy error drops it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fleet import Claim, Fleet, Waiting


class Router:
    def __init__(
        self, fleet: Fleet, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fleet = fleet
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[Claim, float]] = {}

    def cached(self, user: str) -> Claim | None:
        hit = self._cache.get(user)
        if hit is None:
            return None
        if hit[1] < self.clock():
            del self._cache[user]
            return None
        return hit[0]

    async def route(self, user: str, profile: str | None = None) -> Claim | Waiting:
        claim = self.cached(user)
        if claim is not None:
            return claim
        result = await self.fleet.claim(user, profile)
        if isinstance(result, Claim):
            self._cache[user] = (result, self.clock() + self.ttl)
        return result

    def forget(self, user: str) -> None:
        self._cache.pop(user, None)

    def clear(self) -> None:
        self._cache.clear()

    def on_event(self, kind: str, args: list[str]) -> None:
        """Pub/sub handler: `release PROFILE USER` drops that user's route."""
        if kind == "release" and len(args) >= 2:
            self.forget(" ".join(args[1:]))
