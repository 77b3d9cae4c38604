"""Rolling a changed pod template (image, command, env) through the warm pods.

Each pod carries the hash of the template it was made from (`Backend.template_of`,
kept in `PodRecord.extra[TEMPLATE]`: the local backend's record, a Kubernetes label).
When a profile's hash changes, Ready pods of an older one are replaced the way a
Deployment's rolling update with maxSurge 1 and maxUnavailable 0 replaces pods: the
controller's `_scale` asks for one pod more while stale ones remain, and once that
one is Ready (nothing of the profile warming) a stale Ready pod is retired (the oldest
on the least-used node, as a scale-down picks: fleet/packing.py), so the warm buffer
stays served. At `max` there is no room for the extra pod: then
one stale pod goes first (maxUnavailable 1). Claimed pods are never touched: they
end as sessions do (single-use). A pod without a hash (made before pods carried
one) is left alone. Agones rolls its own Fleets (`manages_replicas`): not here.
"""

from __future__ import annotations

import logging

from .backends.base import TEMPLATE, Backend
from .model import PodRecord, PodState
from .packing import least_used_first
from .spec import Profile
from .store import FleetStore

log = logging.getLogger(__name__)


async def roll(
    store: FleetStore,
    backend: Backend,
    profile: Profile,
    records: dict[str, PodRecord],
    states: dict[str, tuple[str, PodState]],
) -> int:
    """Retire at most one stale Ready pod of PROFILE; the stale Ready pods left after it."""
    current = "" if backend.manages_replicas else backend.template_of(profile)
    if not current:
        return 0
    mine = [(pod_id, state) for pod_id, (name, state) in states.items() if name == profile.name]
    stale = sorted(
        (records[pod_id].created, pod_id)
        for pod_id, state in mine
        if state is PodState.READY
        and pod_id in records
        and records[pod_id].extra.get(TEMPLATE, "") not in ("", current)
    )
    if not stale or any(state is PodState.WARMING for _, state in mine):
        return len(stale)  # nothing to roll, or the last replacement is still warming
    counts = await store.counts(profile.name)
    total = counts["warming"] + counts["ready"] + counts["claimed"]
    if total <= profile.target(counts["claimed"] + counts["queue"]) and total < profile.max:
        return len(stale)  # the extra pod first (the controller's _scale)
    claimed = [_node(records, pod_id) for pod_id, state in mine if state is PodState.CLAIMED]
    warm = [(pod_id, _node(records, pod_id), created) for created, pod_id in stale]
    pod_id = least_used_first(warm, claimed)[0]
    if await store.end_pod(pod_id, "retired", only_state=str(PodState.READY)):
        log.info("pod %s retired: made from an older template of %s", pod_id, profile.name)
        return len(stale) - 1
    return len(stale)


def _node(records: dict[str, PodRecord], pod_id: str) -> str:
    """The pod's node as its record says ("" = none, or not known)."""
    rec = records.get(pod_id)
    return rec.extra.get("node", "") if rec is not None else ""
