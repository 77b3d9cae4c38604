"""What a test does to the simulator's Agones: SDK calls from a pod and allocator faults.

`KubeSim` mixes these in (they are also `POST /_sim/<action>`, admin.py).
"""

from __future__ import annotations

from .agones import AgonesController
from .faults import Faults
from .fleets import FleetController
from .store import Obj, clone


class AgonesActions:
    faults: Faults
    agones: AgonesController
    fleets: FleetController

    def inject_allocation_contention(self, count: int = 1) -> None:
        """The next `count` allocations answer Contention (another request took each pick)."""
        self.faults.allocation_contention += count

    def inject_allocation_conflict(self, count: int = 1) -> None:
        """The next `count` allocation tries find their GameServer changed by another writer
        between the allocator's cache and its update: a Conflict, which Agones answers with
        UnAllocated while that GameServer is still Ready (allocator.py), or HTTP 500 when
        all five tries of one allocation conflict."""
        self.agones.allocator.conflicts += count

    def sdk_ready(self, namespace: str, name: str) -> Obj:
        """Code in the GameServer's pod calls SDK Ready() on its sidecar (agones sdkserver)."""
        return clone(self.agones.sdk_ready(namespace, name))

    def drop_allocation_responses(self, count: int = 1) -> None:
        """agones#607: the next allocations succeed but the connection closes before the response."""
        self.faults.allocation_drops += count

    def autoscale_now(self, namespace: str, name: str) -> None:
        """Run one FleetAutoscaler sync now, without waiting for its interval."""
        self.fleets.autoscale(namespace, name)
