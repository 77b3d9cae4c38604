"""Agones Fleets and FleetAutoscalers (Buffer policy).

A Fleet keeps `spec.replicas` live GameServers made from its template; the
Unhealthy ones are deleted and replaced; scaling down never touches Allocated
or Reserved GameServers (not-yet-Ready ones go first, then Ready, newest
first). A FleetAutoscaler with a Buffer policy sets the fleet's replicas every
sync interval exactly as Agones' `applyBufferPolicy` computes them.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from . import errors
from .agones import DEAD, FLEET_LABEL, GSS_LABEL, AgonesController
from .clock import Clock, rfc3339
from .resources import FLEETAUTOSCALERS, FLEETS, GAMESERVERS
from .store import NAME_ALPHABET, Change, Store, clone

_SCALE_DOWN_ORDER = {
    "Unhealthy": 0,
    "Error": 0,
    "PortAllocation": 1,
    "Creating": 1,
    "Starting": 1,
    "Scheduled": 2,
    "RequestReady": 2,
    "Ready": 3,
}


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
        self.sync_interval = sync_interval
        self._pending: set[tuple[str, str]] = set()
        self._gss: dict[str, str] = {}  # fleet uid -> GameServerSet name
        self._autoscalers: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self) -> None:
        self.store.subscribe(FLEETS, self._on_fleet)
        self.store.subscribe(GAMESERVERS, self._on_gameserver)
        self.store.subscribe(FLEETAUTOSCALERS, self._on_autoscaler)

    async def close(self) -> None:
        tasks = list(self._autoscalers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        for gs in [g for g in live if _state(g) in DEAD]:
            self.agones.delete_gameserver(ns, gs["metadata"]["name"])
            live.remove(gs)
        desired = int((fleet.get("spec") or {}).get("replicas") or 0)
        if len(live) < desired:
            for _ in range(desired - len(live)):
                self.agones.create_gameserver(ns, self._new_gameserver(fleet))
        elif len(live) > desired:
            removable = [g for g in live if _state(g) not in ("Allocated", "Reserved")]
            removable.sort(
                key=lambda g: (
                    _SCALE_DOWN_ORDER.get(_state(g), 1),
                    _negated(g["metadata"]["creationTimestamp"]),
                    g["metadata"]["name"],
                )
            )
            for gs in removable[: len(live) - desired]:
                self.agones.delete_gameserver(ns, gs["metadata"]["name"])
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
        counts = {"replicas": 0, "readyReplicas": 0, "allocatedReplicas": 0, "reservedReplicas": 0}
        for gs in self.store.iter(GAMESERVERS, ns):
            if (gs["metadata"].get("labels") or {}).get(FLEET_LABEL) != name or gs["metadata"].get(
                "deletionTimestamp"
            ):
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
            o["status"] = {
                **(o.get("status") or {}),
                **counts,
                "players": {"count": 0, "capacity": 0},
            }

        self.store.mutate(FLEETS, ns, name, write)

    # --- fleet autoscalers -----------------------------------------------------------------

    def _on_autoscaler(self, change: Change) -> None:
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == "ADDED" and key not in self._autoscalers:
            self._autoscalers[key] = asyncio.create_task(
                self._autoscale_loop(*key), name=f"fas {key}"
            )
        elif change.type == "DELETED" and key in self._autoscalers:
            self._autoscalers.pop(key).cancel()

    async def _autoscale_loop(self, ns: str, name: str) -> None:
        while True:
            fas = self.store.peek(FLEETAUTOSCALERS, ns, name)
            if fas is None:
                return
            self.autoscale(ns, name)
            sync = (fas.get("spec") or {}).get("sync") or {}
            interval = (sync.get("fixedInterval") or {}).get("seconds") or self.sync_interval
            await self.clock.sleep(float(interval))

    def autoscale(self, ns: str, name: str) -> None:
        """One FleetAutoscaler sync: set the fleet's replicas from its Buffer policy."""
        fas = self.store.peek(FLEETAUTOSCALERS, ns, name)
        if fas is None:
            return
        spec = fas.get("spec") or {}
        fleet = self.store.peek(FLEETS, ns, spec.get("fleetName", ""))
        status: dict[str, Any] = {
            "currentReplicas": 0,
            "desiredReplicas": 0,
            "ableToScale": False,
            "scalingLimited": False,
        }
        buffer = (spec.get("policy") or {}).get("buffer")
        if fleet is not None and buffer:
            allocated = int((fleet.get("status") or {}).get("allocatedReplicas") or 0)
            desired, limited = buffer_replicas(buffer, allocated)
            status.update(
                currentReplicas=int((fleet.get("status") or {}).get("replicas") or 0),
                desiredReplicas=desired,
                ableToScale=True,
                scalingLimited=limited,
                lastAppliedPolicy="Buffer",
            )
            if int((fleet.get("spec") or {}).get("replicas") or 0) != desired:
                self.store.mutate(
                    FLEETS,
                    ns,
                    fleet["metadata"]["name"],
                    lambda o: o["spec"].__setitem__("replicas", desired),
                )
                status["lastScaleTime"] = rfc3339(self.clock.time())
        self.store.mutate(
            FLEETAUTOSCALERS,
            ns,
            name,
            lambda o: o.__setitem__("status", {**(o.get("status") or {}), **status}),
        )


def buffer_replicas(buffer: dict[str, Any], allocated: int) -> tuple[int, bool]:
    """Agones' applyBufferPolicy: (replicas, scaling limited by min/max)."""
    size = buffer.get("bufferSize")
    if isinstance(size, str) and size.endswith("%"):
        percent = int(size[:-1])
        replicas = math.ceil(allocated * 100 / (100 - percent))
    else:
        replicas = allocated + int(size or 0)
    low, high = int(buffer.get("minReplicas") or 0), int(buffer.get("maxReplicas") or 0)
    if replicas < low:
        return low, True
    if replicas > high:
        return high, True
    return replicas, False


def validate_fleetautoscaler(fas: dict[str, Any]) -> None:
    """The checks Agones' validating webhook makes on a Buffer policy (422 when they fail)."""
    name = (fas.get("metadata") or {}).get("name", "")
    policy = (fas.get("spec") or {}).get("policy") or {}
    buffer = policy.get("buffer")
    if policy.get("type", "Buffer") != "Buffer" or buffer is None:
        return
    size, low, high = (
        buffer.get("bufferSize"),
        int(buffer.get("minReplicas") or 0),
        int(buffer.get("maxReplicas") or 0),
    )
    problems = []
    if isinstance(size, str) and size.endswith("%"):
        percent = int(size[:-1]) if size[:-1].isdigit() else -1
        if not 1 <= percent <= 99:
            problems.append(
                "spec.policy.buffer.bufferSize: Invalid value: bufferSize should be between 1% and 99%"
            )
        if low < 1:
            problems.append(
                "spec.policy.buffer.minReplicas: Invalid value: minReplicas should be more than 0 when bufferSize is set in percents"
            )
    else:
        number = int(size or 0)
        if number <= 0:
            problems.append(
                "spec.policy.buffer.bufferSize: Invalid value: bufferSize should be bigger than 0"
            )
        if high < number:
            problems.append(
                "spec.policy.buffer.maxReplicas: Invalid value: maxReplicas should be bigger than or equal to bufferSize"
            )
        if low != 0 and low < number:
            problems.append(
                "spec.policy.buffer.minReplicas: Invalid value: minReplicas should be bigger than or equal to bufferSize"
            )
    if low > high:
        problems.append(
            "spec.policy.buffer.minReplicas: Invalid value: minReplicas should be smaller than maxReplicas"
        )
    if problems:
        raise errors.ApiError(
            422,
            f'admission webhook "validations.agones.dev" denied the request: FleetAutoscaler "{name}" is invalid: '
            + "; ".join(problems),
            details={"name": name, "group": "autoscaling.agones.dev", "kind": "FleetAutoscaler"},
        )


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


def _negated(timestamp: str) -> tuple[int, ...]:
    """Sort key putting newer timestamps first."""
    return tuple(-ord(ch) for ch in timestamp)
