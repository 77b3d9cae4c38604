"""What the reaper reads and ends: idle or expired sessions (reap_candidates.lua),
stale claims, and the count of busy probes left unanswered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .. import keys
from ..model import Candidate
from ..notices import Tell
from .audit import AUDIT_MAXLEN
from .base import StoreBase

STRIKES_FIELD = "reap_strikes"  # pod hash field: busy probes in a row without an answer


class ReapStore(StoreBase):
    """The reaper's reads and compare-and-delete writes."""

    async def reap_candidates(
        self,
        idle_cutoff: float,
        *,
        session_cutoff: float | None = None,
        profiles: Iterable[str] = (),
        session_cutoffs: Mapping[str, float | None] | None = None,
        limit: int = 1000,
    ) -> tuple[int, list[Candidate]]:
        """(sessions in the activity index, candidates) in one call: O(candidates), no scan.

        Idle: last activity at or before `idle_cutoff`. Expired (only when
        `session_cutoff` is given): claimed at or before it, in `profiles`.
        `session_cutoffs` gives each profile its own (max_session per profile;
        None: no limit) and replaces the other two.
        Busy: found generating by the last cycle (`note_busy`), neither of those.
        """
        if session_cutoffs is not None:
            own = {p: c for p, c in session_cutoffs.items() if c is not None}
            claimed, cutoffs = [keys.claimed(p) for p in own], [repr(c) for c in own.values()]
        else:
            claimed = [keys.claimed(p) for p in profiles] if session_cutoff is not None else []
            cutoffs = []
        flat = await self.scripts.reap_candidates(
            keys=[keys.ACTIVITY, keys.BUSY, *claimed],
            args=[
                repr(idle_cutoff),
                "" if session_cutoff is None else repr(session_cutoff),
                limit,
                *cutoffs,
            ],
        )
        size = Candidate.FIELDS
        rows = flat[1:]
        return int(flat[0]), [
            Candidate.from_flat(rows[i : i + size]) for i in range(0, len(rows), size)
        ]

    async def drop_claim(
        self, user: str, pod_id: str, reason: str = "", tell: Tell | None = None
    ) -> int:
        """Forget a claim whose pod is gone (`pod_id` "" = a stray activity entry).

        Compare-and-delete: 1 claim dropped, 2 stray activity dropped, 0 nothing stale.
        `tell` (with `reason`): a dropped claim leaves its user the notice, as end_pod.
        """
        told = "" if tell is None else tell.encode(AUDIT_MAXLEN)
        return int(
            await self.scripts.drop_claim(
                keys=[keys.claim(user), keys.ACTIVITY, keys.AUDIT],
                args=[user, pod_id, reason, told, repr(self.clock())],
            )
        )

    async def strike(self, pod_id: str) -> int:
        """One more busy probe without an answer; the new count (-1: the pod record is gone)."""
        return int(await self.scripts.strike(keys=[keys.pod(pod_id)], args=[STRIKES_FIELD]))

    async def clear_strikes(self, pod_ids: Iterable[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pod_id in pod_ids:
                pipe.hdel(keys.pod(pod_id), STRIKES_FIELD)
            await pipe.execute()
