"""Tab presence: how many tab connections each broker process holds per user, and
when each user's last one closed (what reclaim_when_gone reads).

Each broker process rewrites its own counts every beat with an expiry
(presence_beat.lua), so the processes of one broker and several brokers add
up, and a killed process's counts lapse instead of holding a session forever:
the reaper's read (gone_candidates.lua) then counts its users as gone from
that expiry. A user never seen with a tab is never in the gone set, so
presence can only shorten a session after a tab was seen and closed; the idle
timeout still rules everything else.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import keys
from ..model import Candidate
from .base import StoreBase


class PresenceStore(StoreBase):
    """Per-process tab counts and the gone set (keys.PRESENCE_PROCS, keys.GONE)."""

    async def presence_beat(
        self,
        process: str,
        open_tabs: Mapping[str, int],
        closed: Mapping[str, float],
        *,
        expires: float | None,
        keep: int,
    ) -> int:
        """Replace `process`'s counts (`open_tabs`: user -> connections, > 0) valid until
        `expires` (None: the process is leaving), and stamp `closed` users (user -> when
        their last connection here closed) as gone. `keep` seconds bounds the hash's life."""
        args: list[str | int] = [process, "" if expires is None else repr(expires), keep]
        args.append(len(open_tabs))
        for user, count in open_tabs.items():
            args += [user, count]
        for user, at in closed.items():
            args += [user, repr(at)]
        return int(
            await self.scripts.presence_beat(
                keys=[keys.PRESENCE_PROCS, keys.presence(process), keys.GONE], args=args
            )
        )

    async def tabs_open(self, user: str) -> int:
        """Tab connections `user` has open on every live broker process (tests, pages)."""
        live = await self.redis.zrangebyscore(keys.PRESENCE_PROCS, f"({self.clock()!r}", "+inf")
        if not live:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for process in live:
                pipe.hget(keys.presence(str(process)), user)  # a decoding client
            counts = await pipe.execute()
        return sum(int(c) for c in counts if c)

    async def gone_candidates(
        self, cutoffs: Mapping[str, float], *, limit: int = 1000
    ) -> list[tuple[float, Candidate]]:
        """(gone since, session) of users with no tab open since their profile's cutoff
        (`cutoffs`: profile -> unix time; profiles not named are never returned), after
        sweeping the counts of processes that stopped beating."""
        args: list[str | int] = [repr(self.clock()), limit]
        for profile, cutoff in cutoffs.items():
            args += [profile, repr(cutoff)]
        flat = await self.scripts.gone_candidates(
            keys=[keys.PRESENCE_PROCS, keys.GONE, keys.ACTIVITY, keys.BUSY], args=args
        )
        size = Candidate.FIELDS + 1
        return [
            (float(flat[i]), Candidate.from_flat(flat[i + 1 : i + size]))
            for i in range(0, len(flat), size)
        ]
