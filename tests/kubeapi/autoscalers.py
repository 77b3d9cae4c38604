"""FleetAutoscalers with a Buffer policy, synced as Agones v1.56.0 syncs them.

Ported from agones v1.56.0 `pkg/fleetautoscalers/controller.go`
(`addFasThread`: a sync at once, then every `spec.sync.fixedInterval.seconds`;
`syncFleetAutoscaler`, `scaleFleet`, `updateStatus`) and
`pkg/fleetautoscalers/fleetautoscalers.go` (`applyBufferPolicy`), with the
Buffer checks of its validating webhook. Every sync sets the Fleet's
`spec.replicas` to allocated + bufferSize, whatever set it since: anything
else that writes `spec.replicas` (a broker raising it for its queue) is undone
at the next sync, and the Fleet then deletes the GameServers it no longer
wants, Ready or still starting.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from . import errors
from .clock import Clock, rfc3339
from .resources import FLEETAUTOSCALERS, FLEETS
from .store import Change, Store


class AutoscalerController:
    def __init__(self, store: Store, clock: Clock, sync_interval: float) -> None:
        self.store, self.clock, self.sync_interval = store, clock, sync_interval
        self._threads: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self) -> None:
        self.store.subscribe(FLEETAUTOSCALERS, self._on_autoscaler)

    async def close(self) -> None:
        tasks = list(self._threads.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_autoscaler(self, change: Change) -> None:
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == "ADDED" and key not in self._threads:
            self._threads[key] = asyncio.create_task(self._thread(*key), name=f"fas {key}")
        elif change.type == "DELETED" and key in self._threads:
            self._threads.pop(key).cancel()

    async def _thread(self, ns: str, name: str) -> None:
        """`addFasThread`: a sync on creation, then one per fixed interval."""
        while True:
            fas = self.store.peek(FLEETAUTOSCALERS, ns, name)
            if fas is None:
                return
            self.sync(ns, name)
            sync = (fas.get("spec") or {}).get("sync") or {}
            interval = (sync.get("fixedInterval") or {}).get("seconds") or self.sync_interval
            await self.clock.sleep(float(interval))

    def sync(self, ns: str, name: str) -> None:
        """`syncFleetAutoscaler`: the Fleet's replicas from its Buffer policy, and the status."""
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
        if fleet is not None and fleet["metadata"].get("deletionTimestamp"):
            return
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
            if int((fleet.get("spec") or {}).get("replicas") or 0) != desired:  # scaleFleet
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
