"""Claims: a user's pod, taken atomically (claim.lua, bind.lua), its per-user lock,
and the profile a user chose last."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import keys, redis_text
from ..model import (
    Allocate,
    Blocked,
    Claim,
    Limited,
    PodRecord,
    Queued,
    Rebuilding,
    SessionEnded,
    Waiting,
    groups_text,
)
from .base import StoreBase, hash_of


class ClaimStore(StoreBase):
    """Who holds which pod."""

    async def claim(
        self,
        user: str,
        profile: str,
        *,
        queue_grace: float,
        join_queue: bool = True,
        reserve: bool = False,
        unless_ended: bool = False,
        groups: Iterable[str] = (),
        bars: GroupBars | None = None,
        priority: int = 0,
    ) -> Claim | Waiting | Allocate:
        """Existing claim, a new claim on a Ready pod, or the user's place in the queue.

        `reserve` (backends that allocate): `Allocate` instead of taking a pod when
        the user may have one now; the caller allocates and calls `bind`.
        `unless_ended`: SessionEnded, and nothing claimed, while the user
        has an unread "session ended" notice and no claim (see `unread_ended`).
        `groups`: the user's groups, kept on a new claim (usage per group: fleet/usage.py).
        `bars`: the limits of the user's groups (fleet.yaml's groups:): Limited, and
        nothing claimed nor queued, when one applies to a new claim.
        `priority`: the user's place-in-line priority (fleet.yaml's groups:), taken when they
        join the line and kept while they wait: higher is served first.
        """
        result = await self.scripts.claim(
            keys=[
                keys.STATE_MARKER,
                keys.claim(user),
                keys.ready(profile),
                keys.claimed(profile),
                keys.ACTIVITY,
                keys.queue(profile),
                keys.queue_seen(profile),
                keys.ended(user),
                keys.queue_order(profile),
                keys.BLOCKED,
            ],
            args=[
                user,
                profile,
                repr(self.clock()),
                queue_grace,
                "1" if join_queue else "0",
                "1" if reserve else "0",
                "1" if unless_ended else "0",
                groups_text(groups),
                *(bars or NO_BARS).argv(),
                str(priority),
            ],
        )
        kind = result[0]
        if kind == "limited":
            return limited(profile, result, bars or NO_BARS)
        if kind == "ended":
            return SessionEnded(profile)
        if kind == "blocked":
            return Blocked(profile)
        if kind == "go":
            return Allocate(profile, result[1] or "")
        if kind == "rebuilding":
            return Rebuilding(profile)
        if kind == "wait":
            return Queued(profile, int(result[1]), int(result[2]))
        return self._claim_from(user, profile, kind, result[1:], self.clock())

    async def bind(
        self, user: str, rec: PodRecord, groups: Iterable[str] = (), bars: GroupBars | None = None
    ) -> Claim | Rebuilding | Limited | Blocked | None:
        """Record that the platform gave `user` the pod `rec` (bind.lua).

        Returns the new claim, the user's existing claim (maybe on another pod:
        `rec` is then an orphan), Rebuilding, Limited (a group limit `bars` names was
        reached since claim.lua said "go": nothing written), Blocked (an admin blocked
        them meanwhile: nothing written), or None when the pod is being deleted or
        belongs to someone else.
        """
        now = self.clock()
        result = await self.scripts.bind(
            keys=[
                keys.STATE_MARKER,
                keys.claim(user),
                keys.pod(rec.id),
                *keys.pod_states(rec.profile)[:2],
                keys.claimed(rec.profile),
                keys.ACTIVITY,
                keys.queue(rec.profile),
                keys.queue_seen(rec.profile),
                keys.queue_order(rec.profile),
                keys.BLOCKED,
            ],
            args=[
                user,
                rec.profile,
                rec.id,
                rec.addr,
                repr(now),
                repr(rec.created or now),
                repr(rec.claimed_at or now),
                groups_text(groups),
                *(bars or NO_BARS).argv(),
            ],
        )
        kind = result[0]
        if kind == "limited":
            return limited(rec.profile, result, bars or NO_BARS)
        if kind == "blocked":
            return Blocked(rec.profile)
        if kind == "rebuilding":
            return Rebuilding(rec.profile)
        if kind == "gone":
            return None
        return self._claim_from(user, rec.profile, kind, result[1:], now)

    def _claim_from(
        self, user: str, profile: str, kind: str, pairs: list[str], now: float
    ) -> Claim:
        """The claim a script answered; a new one carries how long its user waited in line."""
        data = hash_of(pairs)
        claim = Claim.from_hash(user, data, new=kind == "new")
        if claim.new:
            queued = data.get("queued_at")
            waited = max(0.0, now - float(queued)) if queued else None
            claim.waited = waited or 0.0
            if self.on_claim is not None:
                self.on_claim(profile, waited)
        return claim

    async def lock_user(self, user: str, token: str, ttl: float) -> bool:
        """A short per-user lock: one broker allocates for a user at a time."""
        return bool(await self.redis.set(keys.allocating(user), token, nx=True, px=int(ttl * 1000)))

    async def unlock_user(self, user: str, token: str) -> None:
        await self.scripts.unlock(keys=[keys.allocating(user)], args=[token])

    async def mark_bound(self, claim: Claim) -> bool:
        """The claimer is done preparing the pod: people may be sent to it (bound.lua)."""
        done = await self.scripts.bound(keys=[keys.claim(claim.user)], args=[claim.pod, claim.user])
        claim.binding = False
        return bool(done)

    async def lookup(self, user: str) -> Claim | None:
        data = await self.redis.hgetall(keys.claim(user))
        return Claim.from_hash(user, redis_text.text_hash(data)) if data else None

    async def choice(self, user: str) -> str | None:
        """The profile the user picked last time (several profiles), if any."""
        return redis_text.text(await self.redis.get(keys.profile_choice(user)))

    async def set_choice(self, user: str, profile: str, ttl: float) -> None:
        await self.redis.set(keys.profile_choice(user), profile, ex=max(1, int(ttl)))


@dataclass(frozen=True, slots=True)
class GroupBars:
    """The limits of one person's groups, as claim.lua and bind.lua take them (ARGV 9, 10).

    `sessions`: (group, max_sessions) of their groups with a session limit; `spent`: group ->
    (daily_gpu_hours, hours used) of their groups whose budget is used up (fleet/budgets.py).
    """

    sessions: tuple[tuple[str, int], ...] = ()
    spent: dict[str, tuple[float, float]] = field(default_factory=dict)

    def argv(self) -> tuple[str, str]:
        limits = json.dumps([[g, n] for g, n in self.sessions]) if self.sessions else ""
        return limits, json.dumps(sorted(self.spent)) if self.spent else ""


NO_BARS = GroupBars()


def limited(profile: str, reply: list[str], bars: GroupBars) -> Limited:
    """claim.lua's {"limited", kind, group, limit, held}; a budget's figures come from `bars`."""
    kind, group = str(reply[1]), str(reply[2])
    if kind == "budget":
        budget, used = bars.spent.get(group, (0.0, 0.0))
        return Limited(profile, kind, group, budget, used)
    return Limited(profile, kind, group, float(reply[3]), float(reply[4]))
