"""The agones backend in bench/sim_real.py: its fleet file, its Fleet, and its GPU churn.

The Fleet is installed as `sdbroker fleet render | kubectl apply -f -` would:
whatever render makes (a FleetAutoscaler too, in a tree that still renders
one, with the sync interval it rendered). Churn is counted on the simulator's
own GameServers, so it does not depend on what the broker believes:

- created: every GameServer the Fleet made;
- never allocated: ended (Shutdown or deleted) without ever being Allocated;
  `ready` of those reached Ready first (a warm WebUI thrown away), and
  `gpu_s` is the GPU-seconds they held on a node (from the first status
  naming their node to their end), whether or not they became Ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.backends.base import Backend
from fleet.render import render_profile
from fleet.spec import FleetSpec
from tests.kubeapi import GAMESERVERS, KubeSim
from tests.kubeapi.store import Change

SPEC = """\
backend: agones
idle_timeout: 15m
profiles:
  - name: default
    min: 0
    buffer: {buffer}
    max: {gpus}
    probe: "http:/ping"
    agones:
      namespace: sd
      fleet: webui
      image: example/sd-webui:test
      gpus: 1
      volumes: {{models: null, outputs: null}}
"""


@dataclass
class Churn:
    created: int = 0
    allocated: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    on_node_at: dict[str, float] = field(default_factory=dict)
    never_allocated: int = 0
    never_allocated_ready: int = 0
    never_allocated_gpu_s: float = 0.0
    _ended: set[str] = field(default_factory=set)

    def line(self) -> str:
        return (
            f"GameServers created {self.created}, allocated {len(self.allocated)}, "
            f"ended never allocated {self.never_allocated} (of which had been Ready "
            f"{self.never_allocated_ready}; GPU-min held by them "
            f"{self.never_allocated_gpu_s / 60:.0f})"
        )


def count_churn(sim: KubeSim) -> Churn:
    churn = Churn()

    def note(change: Change) -> None:
        gs: dict[str, Any] = change.obj
        name = gs["metadata"]["name"]
        status = gs.get("status") or {}
        state = status.get("state")
        if change.type == "ADDED":
            churn.created += 1
        if status.get("nodeName") and name not in churn.on_node_at:
            churn.on_node_at[name] = sim.clock.time()
        if state == "Allocated":
            churn.allocated.add(name)
        elif state == "Ready":
            churn.ready.add(name)
        if (change.type == "DELETED" or state == "Shutdown") and name not in churn._ended:
            churn._ended.add(name)
            if name not in churn.allocated:
                churn.never_allocated += 1
                churn.never_allocated_ready += name in churn.ready
                if name in churn.on_node_at:
                    churn.never_allocated_gpu_s += sim.clock.time() - churn.on_node_at[name]

    sim.store.subscribe(GAMESERVERS, note)
    return churn


async def install_fleet(backend: Backend, spec: FleetSpec) -> None:
    """What `sdbroker fleet render | kubectl apply -f -` does."""
    custom = backend.custom  # type: ignore[attr-defined]
    for profile in spec.profiles:
        for doc in render_profile(profile):
            ns = doc["metadata"]["namespace"]
            group, plural = {
                "Fleet": ("agones.dev", "fleets"),
                "FleetAutoscaler": ("autoscaling.agones.dev", "fleetautoscalers"),
            }[doc["kind"]]
            await custom.create_namespaced_custom_object(group, "v1", ns, plural, doc)
