"""Agones Fleets: their GameServers, status and scale subresource.

A Fleet keeps `spec.replicas` GameServers made from its template, as Agones'
GameServerSet controller decides (gameserversets.py: Allocated ones always
count and stay, deleted and Unhealthy ones are replaced, scale-down sets the
least useful ones to Shutdown). FleetAutoscalers are autoscalers.py.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from .agones import FLEET_LABEL, GSS_LABEL, AgonesController
from .allocator import node_counts
from .autoscalers import AutoscalerController, buffer_replicas, validate_fleetautoscaler
from .clock import Clock
from .gameserversets import being_deleted, reconciliation
from .resources import FLEETS, GAMESERVERS
from .store import NAME_ALPHABET, Change, Store, clone

# Re-exported: the simulator and tests know them from here.
__all__ = ["FleetController", "buffer_replicas", "scale_of", "validate_fleetautoscaler"]


class FleetController:
    def __init__(
        self,
        store: Store,
        agones: AgonesController,
        clock: Clock,
        rng: random.Random,
        *,
        sync_interval: float = 30.0,
    ) -> None:
        self.store, self.agones, self.clock, self.rng = store, agones, clock, rng
        self._pending: set[tuple[str, str]] = set()
        self._gss: dict[str, str] = {}  # fleet uid -> GameServerSet name
        self.autoscalers = AutoscalerController(store, clock, sync_interval)

    def start(self) -> None:
        self.store.subscribe(FLEETS, self._on_fleet)
        self.store.subscribe(GAMESERVERS, self._on_gameserver)
        self.autoscalers.start()

    async def close(self) -> None:
        await self.autoscalers.close()

    def autoscale(self, ns: str, name: str) -> None:
        """One FleetAutoscaler sync now."""
        self.autoscalers.sync(ns, name)

    # --- fleets ----------------------------------------------------------------------------

    def _on_fleet(self, change: Change) -> None:
        meta = change.obj["metadata"]
        self._queue(meta["namespace"], meta["name"])

    def _on_gameserver(self, change: Change) -> None:
        meta = change.obj["metadata"]
        fleet = (meta.get("labels") or {}).get(FLEET_LABEL)
        if fleet:
            self._queue(meta["namespace"], fleet)

    def _queue(self, ns: str, fleet: str) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._reconcile_pending)
        self._pending.add((ns, fleet))

    def _reconcile_pending(self) -> None:
        pending, self._pending = self._pending, set()
        for ns, fleet in sorted(pending):
            self.reconcile(ns, fleet)

    def reconcile(self, ns: str, name: str) -> None:
        fleet = self.store.peek(FLEETS, ns, name)
        owned = [
            gs
            for gs in self.store.iter(GAMESERVERS, ns)
            if (gs["metadata"].get("labels") or {}).get(FLEET_LABEL) == name
        ]
        live = [gs for gs in owned if not gs["metadata"].get("deletionTimestamp")]
        if fleet is None:  # deleted: cascade to its GameServers
            for gs in live:
                self.agones.delete_gameserver(ns, gs["metadata"]["name"])
            return
        add, doomed = reconciliation(
            str((fleet.get("spec") or {}).get("scheduling") or "Packed"),
            owned,
            node_counts(self.store.iter(GAMESERVERS)),
            int((fleet.get("spec") or {}).get("replicas") or 0),
        )
        for _ in range(add):
            self.agones.create_gameserver(ns, self._new_gameserver(fleet))
        for gs in doomed:  # deleteGameServers: Shutdown; the GameServer controller deletes it
            self.store.mutate(
                GAMESERVERS,
                ns,
                gs["metadata"]["name"],
                lambda o: o.setdefault("status", {}).__setitem__("state", "Shutdown"),
            )
        self._write_status(ns, name)

    def _new_gameserver(self, fleet: dict[str, Any]) -> dict[str, Any]:
        meta = fleet["metadata"]
        gss = self._gss.get(meta["uid"])
        if gss is None:
            gss = meta["name"] + "-" + "".join(self.rng.choice(NAME_ALPHABET) for _ in range(5))
            self._gss[meta["uid"]] = gss
        template = clone((fleet.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        return {
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {
                "generateName": gss + "-",
                "labels": {
                    **(tmeta.get("labels") or {}),
                    FLEET_LABEL: meta["name"],
                    GSS_LABEL: gss,
                },
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "agones.dev/v1",
                        "kind": "GameServerSet",
                        "name": gss,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    },
                ],
            },
            "spec": template.get("spec") or {},
        }

    def _write_status(self, ns: str, name: str) -> None:
        """The GameServerSet's `computeStatus`, which the Fleet's status sums: agones v1.56.0
        `pkg/fleets/controller.go`, `updateFleetStatus`. Only these four counts: a Fleet has
        no `shutdownReplicas` (a GameServerSet has), and `players` only with the PlayerTracking
        feature, off by default (`pkg/util/runtime/features.go`); empty counters and lists
        are left out (`omitempty`)."""
        counts = dict.fromkeys(
            ("replicas", "readyReplicas", "allocatedReplicas", "reservedReplicas"), 0
        )
        for gs in self.store.iter(GAMESERVERS, ns):
            if (gs["metadata"].get("labels") or {}).get(FLEET_LABEL) != name or being_deleted(gs):
                continue
            counts["replicas"] += 1
            state = _state(gs)
            if state == "Ready":
                counts["readyReplicas"] += 1
            elif state == "Allocated":
                counts["allocatedReplicas"] += 1
            elif state == "Reserved":
                counts["reservedReplicas"] += 1

        def write(o: dict[str, Any]) -> None:
            o["status"] = {**(o.get("status") or {}), **counts}

        self.store.mutate(FLEETS, ns, name, write)


def scale_of(fleet: dict[str, Any]) -> dict[str, Any]:
    """The fleet's `scale` subresource."""
    meta = fleet["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": int((fleet.get("spec") or {}).get("replicas") or 0)},
        "status": {
            "replicas": int((fleet.get("status") or {}).get("replicas") or 0),
            "selector": f"{FLEET_LABEL}={meta['name']}",
        },
    }


def _state(gs: dict[str, Any]) -> str:
    return str((gs.get("status") or {}).get("state", ""))
