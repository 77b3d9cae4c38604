"""Backends that allocate (Agones): what the platform allocated, checked against the index.

The platform picks the pod of a claim, so every full controller pass compares
its allocations with the claims Redis records, both ways:

- an allocated pod the index has as unclaimed is an allocation whose answer
  was lost (agones#607) or a broker that died mid-claim: its claim is
  restored, or, when its user holds another pod meanwhile, it is an orphan
  and ended;
- a claimed pod the platform says is allocated to someone else than the
  index does was handed out twice: one user per pod, ever, is broken, so it
  is ended (and deleted) and its user gets a new pod on their next request.

A GameServer that left Allocated while claimed (its own pod called SDK
Ready()) needs nothing here: the backend reports it FAILED, and the
controller ends it as any failed pod.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from .model import Claim, Phase, PodInfo, PodRecord
from .store import FleetStore

log = logging.getLogger(__name__)

#: The controller's `_end(pod, reason, detail)`: audited, and the user is told.
EndPod = Callable[[str, str, str], Awaitable[None]]


async def check_allocations(
    store: FleetStore, records: Iterable[PodRecord], index: dict[str, PodInfo], end: EndPod
) -> int:
    """Adopt lost allocations and end pods allocated twice; how many pods changed."""
    changed = 0
    for rec in records:
        pod = index.get(rec.id)
        if not rec.user or rec.phase is not Phase.READY or pod is None:
            continue
        if pod.user and pod.user != rec.user:
            log.error("pod %s is allocated to %s but claimed by %s; ending it",
                      rec.id, rec.user, pod.user)  # fmt: skip
            await end(rec.id, "dead", "its allocation names another user than its claim")
            changed += 1
        elif not pod.user:
            bound = await store.bind(rec.user, rec)
            if isinstance(bound, Claim) and bound.pod != rec.id:
                log.error("pod %s was allocated to %s, who holds %s; deleting it",
                          rec.id, rec.user, bound.pod)  # fmt: skip
                await store.end_pod(rec.id, "orphan")
                changed += 1
            elif isinstance(bound, Claim):
                log.warning("pod %s allocated to %s without a claim; claim restored",
                            rec.id, rec.user)  # fmt: skip
                changed += 1
    return changed
