"""user -> pod, from a small in-process cache, else one Lua call.

The cache makes the common request cost zero Redis commands. It is kept
honest by pub/sub: a release anywhere drops the entry everywhere at once
(and the whole cache is dropped when the event stream reconnects, since
messages may have been missed). Past its TTL an entry keeps serving while
one background lookup checks it, so an expiry never sends a burst of a
user's requests to Redis together; a user's concurrent first requests share
one claim call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fleet import REDIS_DOWN, Claim, Fleet, Waiting

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self, fleet: Fleet, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fleet = fleet
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[Claim, float]] = {}
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._claiming: dict[tuple[str, str | None, bool], asyncio.Task[Claim | Waiting]] = {}

    def cached(self, user: str) -> Claim | None:
        hit = self._cache.get(user)
        if hit is None:
            return None
        if hit[1] < self.clock() and user not in self._checking:
            self._checking[user] = asyncio.create_task(self._check(user, hit[0]))
        return hit[0]

    async def _check(self, user: str, claim: Claim) -> None:
        try:
            current = await self.fleet.lookup(user)
        except REDIS_DOWN:
            current = claim  # Redis away: the route we know is the best there is
        finally:
            self._checking.pop(user, None)
        if self._cache.get(user, (None,))[0] is not claim:
            return  # replaced or forgotten meanwhile
        if current is None or current.pod != claim.pod:
            self._cache.pop(user, None)
        else:
            self._cache[user] = (claim, self.clock() + self.ttl)

    async def route(
        self, user: str, profile: str | None = None, *, unless_ended: bool = False
    ) -> Claim | Waiting:
        """The user's claim; `unless_ended`: Waiting(ended=True) instead of a new claim
        while the user has an unread notice that their session ended (one Redis call)."""
        claim = self.cached(user)
        if claim is not None:
            return claim
        key = (user, profile, unless_ended)
        task = self._claiming.get(key)
        if task is None:
            task = self._claiming[key] = asyncio.create_task(
                self._claim(user, profile, unless_ended)
            )
            task.add_done_callback(lambda _t: self._claiming.pop(key, None))
        return await asyncio.shield(task)

    async def _claim(self, user: str, profile: str | None, unless_ended: bool) -> Claim | Waiting:
        result = await self.fleet.claim(user, profile, unless_ended=unless_ended)
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
