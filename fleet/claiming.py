"""How a claim finds its pod: each backend brings one of these strategies.

`TakeReady` (local, kubernetes): claim.lua takes a Ready pod from the index in one
atomic step, then the claim is written on the pod. `Allocate` (agones): the
platform picks the pod (a GameServerAllocation), so Redis only decides whose turn
it is and bind.lua records what the platform gave. A backend names its strategy
in `Backend.claim_strategy`; `Fleet.claim` asks it, with no flag in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Protocol

import aiohttp

from .errors import FleetError
from .model import Allocate, Blocked, Claim, Limited, Rebuilding, Retry, Waiting, record_groups
from .probes import make_probe
from .slug import slugify
from .store.claims import GroupBars

if TYPE_CHECKING:
    from .service import Fleet

log = logging.getLogger(__name__)
BIND_ATTEMPTS = 3
ALLOCATE_LOCK_TTL = 10.0  # seconds one request may allocate for a user before others retry


class ClaimStrategy(Protocol):
    """One way of giving `user` a pod of profile `name` (or their outcome without one)."""

    async def claim(
        self, fleet: Fleet, user: str, name: str, join_queue: bool, unless_ended: bool,
        started: float, groups: tuple[str, ...] = (),
    ) -> Claim | Waiting: ...  # fmt: skip


async def _ask(
    fleet: Fleet, user: str, name: str, join_queue: bool, unless_ended: bool,
    groups: tuple[str, ...], bars: GroupBars | None, *, reserve: bool = False,
) -> Claim | Waiting | Allocate:  # fmt: skip
    """claim.lua, as both strategies ask it; `reserve` (the platform allocates): Allocate
    instead of taking a pod when the user may have one now."""
    return await fleet.store.claim(
        user,
        name,
        queue_grace=fleet.queue_grace,
        join_queue=join_queue,
        reserve=reserve,
        unless_ended=unless_ended,
        groups=groups,
        bars=bars,
        priority=fleet.priority_of(groups),
    )


class TakeReadyPod:
    """The index holds the Ready pods: claim.lua takes one, then it is bound here."""

    async def claim(
        self, fleet: Fleet, user: str, name: str, join_queue: bool, unless_ended: bool,
        started: float, groups: tuple[str, ...] = (),
    ) -> Claim | Waiting:  # fmt: skip
        bars = await fleet.group_bars(groups)
        for _ in range(BIND_ATTEMPTS):
            result = await _ask(fleet, user, name, join_queue, unless_ended, groups, bars)
            if isinstance(result, Allocate):  # only asked for with reserve=True
                raise AssertionError("claim.lua answered 'go' without reserve")
            if not isinstance(result, Claim) or not result.new:
                return result
            bound = await fleet.bind_or_end(result)
            if bound:
                fleet.claimed(result, started)
                return result
            if bound is None:  # the pod is kept for the user: they wait for it
                return Retry(name)
        return Retry(name)


class AllocateFromPlatform:
    """Claim for a backend that picks the pod itself (Agones GameServerAllocation).

    Redis decides whose turn it is (the line's rules, priority included), a per-user lock
    makes concurrent first requests allocate once, the backend allocates
    (a retry returns the same GameServer), and bind.lua records the claim.
    """

    async def claim(
        self, fleet: Fleet, user: str, name: str, join_queue: bool, unless_ended: bool,
        started: float, groups: tuple[str, ...] = (),
    ) -> Claim | Waiting:  # fmt: skip
        bars = await fleet.group_bars(groups)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + ALLOCATE_LOCK_TTL
        while True:
            result = await _ask(
                fleet, user, name, join_queue, unless_ended, groups, bars, reserve=True
            )
            if not isinstance(result, Allocate):
                return result
            if await fleet.store.lock_user(user, token, ALLOCATE_LOCK_TTL):
                break
            if time.monotonic() > deadline:  # another request is allocating for this user
                return Retry(name)
            await asyncio.sleep(0.05)
        try:
            return await self._locked(fleet, user, name, join_queue, started, groups, bars)
        finally:
            await fleet.store.unlock_user(user, token)

    async def _locked(
        self, fleet: Fleet, user: str, name: str, join_queue: bool, started: float,
        groups: tuple[str, ...], bars: GroupBars | None,
    ) -> Claim | Waiting:  # fmt: skip
        slug = slugify(user)
        profile = fleet.spec.profile(name)
        backend = fleet.backend
        for _ in range(BIND_ATTEMPTS):
            try:
                rec = await backend.allocate(
                    profile, user, slug, record_groups(groups, fleet.spec.groups)
                )
            except FleetError as exc:  # e.g. answers lost: the controller adopts what was allocated
                log.warning("allocation for %s failed: %s", user, exc)
                return Retry(name)
            if rec is None:  # nothing Ready on the platform: wait in line
                if join_queue:
                    return await fleet.store.join_queue(user, name, fleet.priority_of(groups))
                return Retry(name)
            bound = await fleet.store.bind(user, rec, groups, bars)
            if isinstance(bound, Limited | Blocked):  # the group's last place went, or an
                # admin blocked them, meanwhile: give it back
                with contextlib.suppress(FleetError):
                    await backend.delete(rec.id)
                return bound
            if bound is None:  # our GameServer is being deleted: the next allocation differs
                await asyncio.sleep(0.1)
                continue
            if isinstance(bound, Rebuilding) or bound.pod != rec.id:
                return bound  # rebuilding, or the user holds another pod (rec: orphan)
            try:
                await backend.prepare_outputs(slug)
                await make_probe(profile.probe).set_outputs(
                    fleet.http, bound.addr, backend.outputs_path(slug)
                )
                await fleet.store.mark_bound(bound)
            except (FleetError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("pod %s for %s failed (%s); taking another", rec.id, user, exc)
                await fleet.store.end_pod(rec.id, "claim_failed", only_user=user)
                with contextlib.suppress(FleetError):
                    await backend.delete(rec.id)
                continue
            if bound.new:
                fleet.claimed(bound, started, rec.extra.get("node", ""))
            return bound
        return Retry(name)


TAKE_READY = TakeReadyPod()
ALLOCATE = AllocateFromPlatform()
