"""Rebuilding the index from the backend's own records (after a start, or Redis
losing its data): restore.lua, and the marker that says the index is whole."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .. import keys
from ..model import PodRecord, PodState, groups_text
from .base import StoreBase


class RebuildStore(StoreBase):
    """The index written again from the pods."""

    async def is_built(self) -> bool:
        return bool(await self.redis.exists(keys.STATE_MARKER))

    async def restore(
        self, records: Iterable[PodRecord], *, mark_built: bool
    ) -> tuple[int, list[str]]:
        """Write pods (and their claims) the index lacks, from the backend's records.

        Used at start-up to adopt pods and after Redis lost its data; one atomic
        script (fleet/lua/restore.lua). Returns how many were restored and the
        pods that conflict with a claim the index already has (to be ended).
        """
        now = self.clock()
        payload = [
            {
                "id": rec.id,
                "profile": rec.profile,
                "state": str(
                    PodState.CLAIMED
                    if rec.user
                    else PodState.READY
                    if rec.phase == "ready"
                    else PodState.WARMING
                ),
                "addr": rec.addr,
                "created": repr(rec.created or now),
                "user": rec.user,
                "since": repr(rec.claimed_at or now),
                "groups": groups_text(rec.groups),  # the group limits count a rebuilt claim
                "fields": dict(rec.extra),
            }
            for rec in records
        ]
        result = await self.scripts.restore(
            keys=[keys.STATE_MARKER, keys.ACTIVITY],
            args=[json.dumps(payload), repr(now), "1" if mark_built else "0"],
        )
        return int(result[0]), [str(pod) for pod in result[1:]]

    async def mark_built(self) -> None:
        await self.redis.set(keys.STATE_MARKER, repr(self.clock()))
