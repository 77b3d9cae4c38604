"""An in-memory fleet backend for the stateful property test: no processes, no HTTP.

It keeps the contract of fleet.backends.base.Backend: its records are the
durable truth Redis is rebuilt from, and `mark_claimed` refuses a pod whose
record already names another user (Conflict) or that is gone (PodGone).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fleet import Conflict, Phase, PodGone, PodRecord
from fleet.backends.base import Backend
from fleet.model import record_groups_of
from fleet.spec import FleetSpec, Profile


class FakeBackend(Backend):
    name = "fake"
    probes_readiness = False  # a created pod reports READY itself on the next observe

    def __init__(self, spec: FleetSpec) -> None:
        super().__init__(spec)
        self.records: dict[str, PodRecord] = {}
        self.created: list[str] = []
        #: Awaited once at the start of the next mark_claimed (to inject a fault mid-claim).
        self.before_mark: Callable[[], Awaitable[None]] | None = None

    async def create(self, profile: Profile, pod_id: str) -> PodRecord:
        rec = PodRecord(
            id=pod_id,
            profile=profile.name,
            phase=Phase.STARTING,
            addr=f"fake://{pod_id}",
            created=time.time(),
        )
        self.records[pod_id] = rec
        self.created.append(pod_id)
        return rec

    async def delete(self, pod_id: str) -> None:
        self.records.pop(pod_id, None)

    async def observe(self) -> list[PodRecord]:
        for rec in self.records.values():
            if rec.phase is Phase.STARTING:
                rec.phase = Phase.READY  # started by the time anyone looks again
        return [_copy(r) for r in self.records.values()]

    async def phase_of(self, pod_id: str) -> PodRecord | None:
        rec = self.records.get(pod_id)
        return _copy(rec) if rec else None

    async def mark_claimed(self, pod_id: str, user: str, slug: str, groups: str = "") -> None:
        hook, self.before_mark = self.before_mark, None
        if hook is not None:
            await hook()
        rec = self.records.get(pod_id)
        if rec is None or rec.phase in (Phase.GONE, Phase.FAILED):
            raise PodGone(f"pod {pod_id} is gone")
        if rec.user and rec.user != user:
            raise Conflict(f"pod {pod_id} is labelled for {rec.user}")
        rec.user, rec.claimed_at = user, time.time()
        rec.groups = record_groups_of(groups)

    async def prepare_outputs(self, slug: str) -> None:
        """Nothing on disk."""

    def kill(self, pod_id: str) -> None:
        """The pod died: its record stays, phase GONE (a crashed process, an evicted pod)."""
        self.records[pod_id].phase = Phase.GONE


def _copy(rec: PodRecord) -> PodRecord:
    return PodRecord(
        id=rec.id,
        profile=rec.profile,
        phase=rec.phase,
        addr=rec.addr,
        user=rec.user,
        created=rec.created,
        claimed_at=rec.claimed_at,
        reason=rec.reason,
        terminating=rec.terminating,
        extra=dict(rec.extra),
    )
