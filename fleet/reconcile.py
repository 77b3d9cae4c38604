"""The Redis index repaired from the pods' own records, both ways, on every full pass.

Redis is an index, not the record: a claim is written on its pod (a claim file,
a label, an Allocated GameServer) before anybody is sent there, and that record
never changes hands. Redis can go back in time without anybody deleting it:
Memorystore Standard replicates asynchronously, so a failover promotes a replica
that may lack the last writes ("Standard Tier instances ... asynchronous
replication", cloud.google.com/memorystore/docs/redis/high-availability-for-memorystore-for-redis),
and a restore from a backup brings back an older index. Its marker is then still
set (no rebuild starts), and a pod can be Ready in the index while its record
says it is someone's.

So every full pass, on every backend:

- records to index: a live pod whose record names a user is that user's claim in
  the index (re-attached as `check_allocations` adopts lost Agones allocations);
  a user the stale index put on it meanwhile (a claim still binding: the pod's
  record refused it) loses that claim, never the owner. A bound claim of
  someone else is no restore (records never change hands) but a pod handed out
  twice: `check_allocations` ends those on Agones.
  When two records name one user, the later claim is theirs and the earlier one
  (a session whose end was lost) is ended;
- index to records: a bound claim whose pod's record names nobody is written on
  the record again, so the next loss of Redis cannot lose it.

A disagreement never deletes a live session. `EPOCH` (fleet/keys.py) tells a pass
that Redis lost writes since the last one; the pass then says so (log, audit) and
tells every broker to forget its cached routes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from . import keys
from .backends.base import Backend
from .errors import Conflict, FleetError, PodGone
from .events import Event, Kind
from .model import Phase, PodRecord, PodState, groups_text, record_groups
from .slug import slugify
from .store import FleetStore

log = logging.getLogger(__name__)
#: pod id -> (profile, state), as FleetStore.pod_states answers.
States = Mapping[str, tuple[str, PodState]]
REBIND_AFTER = 30.0  # seconds: a claim bound this long without a record of it is rewritten


@dataclass(frozen=True, slots=True)
class Reattached:
    """What reattach.lua did: `kind` is same, deleting, bound, holds or reattached."""

    kind: str
    displaced: str = ""  # the user the index had put on the pod instead
    other: str = ""  # holds: the user's later pod; reattached: the earlier pod retired


async def reattach(store: FleetStore, rec: PodRecord) -> Reattached:
    """Make the index say the pod is its record's user's (fleet/lua/reattach.lua)."""
    now = store.clock()
    result = await store.scripts.reattach(
        keys=[
            keys.pod(rec.id),
            keys.claim(rec.user),
            *keys.pod_states(rec.profile),
            keys.ACTIVITY,
            keys.DELETING,
        ],
        args=[
            rec.id,
            rec.user,
            rec.profile,
            rec.addr,
            repr(rec.claimed_at or now),
            repr(now),
            repr(rec.created or now),
            repr(rec.claimed_at),
            groups_text(rec.groups),
        ],
    )
    kind = str(result[0])
    if kind in ("holds", "bound"):
        return Reattached(kind, other=str(result[1]))
    if kind == "reattached":
        return Reattached(kind, displaced=str(result[1]), other=str(result[2]))
    return Reattached(kind)


async def owner_wins(store: FleetStore, backend: Backend, pod_id: str, user: str) -> bool:
    """A claim for `user` met a pod whose record names someone else (Conflict): put the pod
    back in its owner's claim. False when the record names nobody (the caller ends it)."""
    try:
        rec = await backend.phase_of(pod_id)
    except FleetError as exc:
        log.warning("cannot read the record of pod %s: %s", pod_id, exc)
        return False
    if rec is None or not rec.user or rec.user == user:
        return False
    done = await reattach(store, rec)
    if done.kind == "holds":  # an earlier session of its owner, who holds a later pod
        await store.end_pod(pod_id, "superseded")
    log.error(
        "pod %s was given to %s but its record says it is %s's: the index was behind "
        "(a Redis failover or restore); it stays %s's (%s)",
        pod_id, user, rec.user, rec.user, done.kind,
    )  # fmt: skip
    await store.audit(user=rec.user, pod=pod_id, profile=rec.profile, reason="reattached",
                      detail=f"the index had given it to {user}")  # fmt: skip
    return True


class Reconciler:
    """The controller's repair of the index; constructing it does no I/O."""

    def __init__(self, store: FleetStore, backend: Backend) -> None:
        self.store = store
        self.backend = backend
        self._epoch: int | None = None  # the EPOCH this process wrote last (None: never)

    async def lost_writes(self) -> bool:
        """Redis lost writes since this controller's last pass (and the epoch moves on)."""
        before = await self.store.redis.get(keys.EPOCH)
        lost = self._epoch is not None and (before is None or int(before) < self._epoch)
        self._epoch = int(await self.store.redis.incr(keys.EPOCH))
        return lost

    async def run(self, records: Mapping[str, PodRecord], states: States) -> int:
        """One repair, both ways; how many pods changed in the index."""
        if await self.lost_writes():
            log.error(
                "Redis lost writes since the last pass (a failover to a replica that was "
                "behind, or a restore): repairing the index from the pods' records"
            )
            await self.store.audit(user="", pod="", profile="", reason="index_restored", by="controller",
                                   detail="Redis went back in time; index repaired from the pods")  # fmt: skip
            await self.store.publish(Event(Kind.REBUILD))
        changed = await self._records_to_index(records)
        await self._index_to_records(records, states)
        return changed

    async def _records_to_index(self, records: Mapping[str, PodRecord]) -> int:
        owned: dict[str, PodRecord] = {}  # user -> the record of their latest claim
        stale: list[PodRecord] = []
        for rec in records.values():
            if not rec.user or rec.phase is Phase.GONE or rec.terminating:
                continue
            other = owned.get(rec.user)
            if other is not None and other.claimed_at >= rec.claimed_at:
                stale.append(rec)
                continue
            if other is not None:
                stale.append(other)
            owned[rec.user] = rec
        if not owned and not stale:
            return 0
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for rec in owned.values():
                pipe.hmget(keys.pod(rec.id), "state", "user")
                pipe.hget(keys.claim(rec.user), "pod")
            answers = await pipe.execute()
        changed = 0
        for i, rec in enumerate(owned.values()):
            (state, holder), claimed = answers[2 * i], answers[2 * i + 1]
            if state == str(PodState.CLAIMED) and holder == rec.user and claimed == rec.id:
                continue
            if state == str(PodState.DELETING):
                continue
            done = await reattach(self.store, rec)
            if done.kind == "holds":  # the index's claim is the later one: this one is over
                stale.append(rec)
            if done.kind != "reattached":
                continue
            changed += 1
            log.error(
                "pod %s is %s's by its record, but the index %s; re-attached",
                rec.id, rec.user,
                f"had given it to {done.displaced}" if done.displaced else f"had it {state or 'not at all'}",
            )  # fmt: skip
            detail = "the index had lost this claim"
            if done.displaced:
                detail = f"the index had given it to {done.displaced}"
            await self.store.audit(user=rec.user, pod=rec.id, profile=rec.profile,
                                   reason="reattached", by="controller", detail=detail)  # fmt: skip
        for rec in stale:  # an earlier session of a user who holds a later one
            ended = await self.store.end_pod(rec.id, "superseded")
            if ended is not None:
                changed += 1
                log.warning("pod %s: %s holds a later pod; this one ended", rec.id, rec.user)
                await self.store.audit(user=rec.user, pod=rec.id, profile=rec.profile,
                                       reason="superseded", by="controller",
                                       detail="its user holds a later pod")  # fmt: skip
        return changed

    async def _index_to_records(self, records: Mapping[str, PodRecord], states: States) -> None:
        """Bound claims on live pods whose record names nobody: write the record again.

        Not for backends that allocate: there the platform's allocation is the record,
        and `check_allocations` compares the two."""
        if self.backend.allocates:
            return
        unrecorded = [
            pod_id
            for pod_id, (_, state) in states.items()
            if state is PodState.CLAIMED
            and (rec := records.get(pod_id)) is not None
            and not rec.user
            and rec.phase not in (Phase.GONE, Phase.FAILED)
        ]
        if not unrecorded:
            return
        now = self.store.clock()
        for pod in await self.store.pods_by_id(unrecorded):
            claim = await self.store.lookup(pod.user) if pod.user else None
            if claim is None or claim.pod != pod.id or claim.binding:
                continue  # a claim being made (its claimer writes the record) or ended
            if now - claim.since < REBIND_AFTER:
                continue
            try:
                groups = record_groups(claim.groups)
                await self.backend.mark_claimed(pod.id, pod.user, slugify(pod.user), groups)
            except (Conflict, PodGone, FleetError) as exc:
                log.warning("pod %s: cannot write %s's claim on it: %s", pod.id, pod.user, exc)
                continue
            log.warning("pod %s: its record had lost %s's claim; written again", pod.id, pod.user)
