"""user -> pod, from a small in-process cache, else one Lua call.

The cache makes the common request cost zero Redis commands. It is kept
honest by pub/sub: a release anywhere drops the entry everywhere at once
(and the whole cache is dropped when the event stream reconnects, since
messages may have been missed). Past its TTL an entry keeps serving while
one background lookup checks it, so an expiry never sends a burst of a
user's requests to Redis together; a user's concurrent first requests share
one claim call. Every task the router starts is tracked: `close` awaits them
(a claim in flight is bound, not cut off), so none is destroyed pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fleet import Claim, Event, Fleet, Kind, StoreUnavailable, Waiting

log = logging.getLogger(__name__)
T = TypeVar("T")
CLOSE_TIMEOUT = 5.0  # seconds close waits for lookups and claims in flight before cancelling


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
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A claim's error reaches its callers too; a background check's only this log.
            log.debug("router task failed: %r", exc)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Await the lookups and claims in flight (bounded); cancel whatever outlasts it."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def cached(self, user: str) -> Claim | None:
        hit = self._cache.get(user)
        if hit is None:
            return None
        if hit[1] < self.clock() and user not in self._checking:
            self._checking[user] = self._spawn(self._check(user, hit[0]))
        return hit[0]

    async def _check(self, user: str, claim: Claim) -> None:
        try:
            current = await self.fleet.lookup(user)
        except StoreUnavailable:
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
        self,
        user: str,
        profile: str | None = None,
        *,
        unless_ended: bool = False,
        groups: tuple[str, ...] = (),
    ) -> Claim | Waiting:
        """The user's claim; `unless_ended`: SessionEnded instead of a new claim
        while the user has an unread notice that their session ended (one Redis call).
        `groups`: the identity's, kept on a new claim (GPU usage per group)."""
        claim = self.cached(user)
        if claim is not None:
            return claim
        key = (user, profile, unless_ended)
        task = self._claiming.get(key)
        if task is None:
            task = self._claiming[key] = self._spawn(
                self._claim(user, profile, unless_ended, groups)
            )
            task.add_done_callback(lambda _t: self._claiming.pop(key, None))
        return await asyncio.shield(task)

    async def _claim(
        self, user: str, profile: str | None, unless_ended: bool, groups: tuple[str, ...]
    ) -> Claim | Waiting:
        result = await self.fleet.claim(user, profile, unless_ended=unless_ended, groups=groups)
        if isinstance(result, Claim):
            self._cache[user] = (result, self.clock() + self.ttl)
        return result

    def forget(self, user: str) -> None:
        self._cache.pop(user, None)

    def clear(self) -> None:
        self._cache.clear()

    def on_event(self, event: Event) -> None:
        """Pub/sub handler: a release drops that user's route; after a reconnect (releases
        may have been missed) every route goes."""
        if event.kind is Kind.RELEASE:
            self.forget(event.subject)
        elif event.kind is Kind.RECONNECT:
            self.clear()
