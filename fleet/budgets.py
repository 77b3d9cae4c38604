"""Group limits for one claim: what fleet.yaml's `groups:` says of a person's groups, with
each budgeted group's GPU-hours of the last 24 h (fleet/usage.py), read once a minute.

The session limits are counted inside claim.lua, atomically across brokers; the budgets
are not, and need not be: a spent budget stops NEW sessions only (running ones go on,
docs/operations.md), so a figure up to BUDGET_TTL old admits at most the sessions its
group starts within that minute past the budget. Reading the usage is one scan of the
audit stream; once a minute per broker keeps that off the path of every claim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from .spec import FleetSpec
from .spec.groups import budgeted, session_limits
from .store import FleetStore
from .store.claims import GroupBars
from .usage import read_usage

BUDGET_TTL = 60.0  # seconds a broker reuses its reading of every group's GPU-hours
DAY = 24 * 3600.0


class GroupBudgets:
    """Per broker: every group's GPU-hours over the last 24 h, read at most every BUDGET_TTL."""

    def __init__(
        self, store: FleetStore, *, ttl: float = BUDGET_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._hours: dict[str, float] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def hours(self, spec: FleetSpec) -> dict[str, float]:
        """group -> GPU-hours its members used in the last 24 h (running sessions included)."""
        async with self._lock:  # one read when many claims find the figure stale together
            now = self.clock()
            if now - self._read_at >= self.ttl:
                names = [p.name for p in spec.profiles]
                rows = await read_usage(self.store, names, now - DAY, now, "group")
                self._hours = {u.key: sum(u.seconds.values()) / 3600 for u in rows}
                self._read_at = now
            return self._hours

    async def bars(self, spec: FleetSpec, groups: Iterable[str]) -> GroupBars:
        """The limits claim.lua checks for a person in `groups` (no read without a budget)."""
        member_of = tuple(groups)
        limits = session_limits(spec.groups, member_of)
        budgets = budgeted(spec.groups, member_of)
        spent: dict[str, tuple[float, float]] = {}
        if budgets:
            used = await self.hours(spec)
            spent = {g: (b, used.get(g, 0.0)) for g, b in budgets.items() if used.get(g, 0.0) >= b}
        return GroupBars(limits, spent)
