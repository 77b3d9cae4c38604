"""Agones GameServers and GameServerAllocations.

Each GameServer gets a backing Pod of the same name, with Agones' metadata
(gameserver_pod.py), so the pod lifecycle's scheduling, GPU capacity, start
delay, failures and process runner apply to it. The GameServer follows its
pod (Creating -> Starting -> Scheduled -> RequestReady -> Ready; a failed or
lost pod: Unhealthy) and its pod's SDK calls (`sdk_ready`). Addresses and
ports are written as Agones writes them (gameserver_address.py); allocation
is allocator.py.
"""

from __future__ import annotations

import random
from typing import Any

from . import errors
from .allocator import Allocator
from .clock import Clock, rfc3339
from .faults import Faults
from .gameserver_address import apply_address_and_port
from .gameserver_pod import SDK_SERVER_DEFAULTS, gameserver_pod
from .lifecycle import PodLifecycle
from .resources import GAMESERVERS, NODES, PODS
from .store import Change, Store, check_preconditions, clone

GS_LABEL = "agones.dev/gameserver"
FLEET_LABEL = "agones.dev/fleet"
GSS_LABEL = "agones.dev/gameserverset"
BEFORE_SCHEDULED = ("PortAllocation", "Creating", "Starting")
SERVING = ("Ready", "Allocated", "Reserved")
DEAD = ("Unhealthy", "Error", "Shutdown")


class AgonesController:
    def __init__(
        self,
        store: Store,
        lifecycle: PodLifecycle,
        clock: Clock,
        rng: random.Random,
        faults: Faults,
    ) -> None:
        self.store, self.lifecycle, self.clock, self.rng, self.faults = (
            store,
            lifecycle,
            clock,
            rng,
            faults,
        )
        self._next_port = 7000
        self.allocator = Allocator(store, clock, rng, faults)

    def start(self) -> None:
        self.store.subscribe(GAMESERVERS, self._on_gameserver)
        self.store.subscribe(PODS, self._on_pod)
        self.allocator.start()

    def allocate(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """The GameServerAllocation create (allocator.py)."""
        return self.allocator.allocate(ns, body)

    # --- GameServers -----------------------------------------------------------------------

    def create_gameserver(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """What the API create does, including Agones' mutating webhook: defaults and host ports."""
        gs = clone(body)
        spec = gs.setdefault("spec", {})
        template = spec.setdefault("template", {})
        containers = template.setdefault("spec", {}).get("containers") or []
        if not containers:
            raise errors.invalid(
                "GameServer",
                gs.get("metadata", {}).get("name", ""),
                "spec.template.spec.containers: Required value",
                "agones.dev",
            )
        spec.setdefault("container", containers[0].get("name", ""))
        for port in spec.setdefault("ports", []) or []:
            policy = port.setdefault("portPolicy", "Dynamic")
            port.setdefault("protocol", "UDP")
            port.setdefault("container", spec["container"])
            if policy in ("Dynamic", "Passthrough"):
                port["hostPort"] = self._allocate_port()
                if policy == "Passthrough":
                    port["containerPort"] = port["hostPort"]
        spec.setdefault("scheduling", "Packed")
        spec["sdkServer"] = {**SDK_SERVER_DEFAULTS, **(spec.get("sdkServer") or {})}
        spec.setdefault(
            "health",
            {
                "disabled": False,
                "initialDelaySeconds": 5,
                "periodSeconds": 5,
                "failureThreshold": 3,
            },
        )
        meta = gs.setdefault("metadata", {})
        meta.setdefault("finalizers", ["agones.dev"])
        gs["status"] = {
            "state": "Creating",
            "ports": None,
            "address": "",
            "nodeName": "",
            "reservedUntil": None,
        }
        return self.store.create(GAMESERVERS, ns, gs)

    def delete_gameserver(
        self,
        ns: str,
        name: str,
        grace: int | None = None,
        preconditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        gs = self.store.get(GAMESERVERS, ns, name)
        check_preconditions(gs, preconditions, "gameservers", "agones.dev")
        if self.store.peek(PODS, ns, name) is None:
            return self.store.remove(GAMESERVERS, ns, name)
        if not gs["metadata"].get("deletionTimestamp"):

            def mark(o: dict[str, Any]) -> None:
                o["metadata"]["deletionTimestamp"] = rfc3339(self.clock.time())
                o["metadata"]["deletionGracePeriodSeconds"] = 0

            gs = self.store.mutate(GAMESERVERS, ns, name, mark) or gs
        self.lifecycle.delete(ns, name, grace, None)
        return gs

    def _allocate_port(self) -> int:
        port = self._next_port
        self._next_port = 7000 + (self._next_port - 7000 + 1) % 1001
        return port

    def _on_gameserver(self, change: Change) -> None:
        gs = change.obj
        meta = gs["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if change.type == "ADDED" and self.store.peek(GAMESERVERS, ns, name) is not None:
            self._create_pod(gs)
        elif (
            change.type == "MODIFIED"
            and _state(gs) == "Shutdown"
            and not meta.get("deletionTimestamp")
            and self.store.peek(GAMESERVERS, ns, name) is not None
        ):
            self.delete_gameserver(ns, name)
        elif change.type == "MODIFIED" and _state(gs) == "RequestReady":
            self._request_ready(ns, name)

    def _create_pod(self, gs: dict[str, Any]) -> None:
        meta = gs["metadata"]
        pod = gameserver_pod(gs)  # metadata from the pod template only, as in Agones
        try:
            self.lifecycle.create(meta["namespace"], pod)
        except errors.ApiError:  # e.g. the previous pod of that name is still terminating
            self._set_state(meta["namespace"], meta["name"], "Error")
            return
        self._set_state(meta["namespace"], meta["name"], "Starting")

    def _on_pod(self, change: Change) -> None:
        meta = change.obj["metadata"]
        name = (meta.get("labels") or {}).get(GS_LABEL)
        if not name:
            return
        ns = meta["namespace"]
        gs = self.store.peek(GAMESERVERS, ns, name)
        if gs is None:
            return
        if change.type == "DELETED":
            if gs["metadata"].get("deletionTimestamp"):
                self.store.remove(GAMESERVERS, ns, name)
            elif _state(gs) not in DEAD:
                self._set_state(ns, name, "Unhealthy")
            return
        pod = self.store.peek(PODS, ns, meta["name"])
        if pod is None or gs["metadata"].get("deletionTimestamp"):
            return
        state = _state(gs)
        if (
            _pod_failed(pod)
            or (state in SERVING and not _containers_running(pod))
            or (pod["metadata"].get("deletionTimestamp") and state not in DEAD)
        ):
            if state not in DEAD:
                self._set_state(ns, name, "Unhealthy")
            return
        if state in BEFORE_SCHEDULED and _has_node_and_ips(pod) and self._scheduled(gs, pod):
            state = "Scheduled"
        if state == "Scheduled" and _pod_ready(pod):
            self._set_state(ns, name, "RequestReady")
            self._set_state(ns, name, "Ready")
        elif state == "RequestReady":  # SDK Ready() came before the pod had a node
            self._request_ready(ns, name)

    def _scheduled(self, gs: dict[str, Any], pod: dict[str, Any], state: str = "Scheduled") -> bool:
        """Address, addresses and ports written as Agones writes them (gameserver_address.py),
        with the new state: agones v1.56.0 `pkg/gameservers/controller.go`,
        `syncGameServerStartingState` (which waits for the pod's node AND its pod IPs)."""
        meta = gs["metadata"]
        node = self.store.peek(NODES, None, pod["spec"]["nodeName"])
        if node is None:  # Agones retries until its node lister has it
            return False

        def write(o: dict[str, Any]) -> None:
            apply_address_and_port(o["status"], o["spec"], node, pod)
            o["status"]["state"] = state

        self.store.mutate(GAMESERVERS, meta["namespace"], meta["name"], write)
        return True

    def sdk_ready(self, ns: str, name: str) -> dict[str, Any]:
        """SDK Ready(), as code in the GameServer's pod calls it on its sidecar (localhost).

        Ported from agones v1.56.0 `pkg/sdkserver/sdkserver.go`: `Ready` queues
        RequestReady and `updateState` writes it (clearing reservedUntil) unless
        the GameServer is being deleted or is Unhealthy. Nothing else stops it:
        an Allocated or Reserved GameServer goes back too, keeping its labels.
        """
        gs = self.store.get(GAMESERVERS, ns, name)
        if gs["metadata"].get("deletionTimestamp") or _state(gs) == "Unhealthy":
            return gs

        def write(o: dict[str, Any]) -> None:
            o.setdefault("status", {}).update(state="RequestReady", reservedUntil=None)

        return self.store.mutate(GAMESERVERS, ns, name, write) or gs

    def _request_ready(self, ns: str, name: str) -> None:
        """RequestReady -> Ready once the pod has a node (its address filled in then if
        still missing, WITHOUT waiting for pod IPs: no PodIP entry if the pod has none yet):
        agones v1.56.0 `pkg/gameservers/controller.go`, `syncGameServerRequestReadyState`."""
        gs = self.store.peek(GAMESERVERS, ns, name)
        pod = self.store.peek(PODS, ns, name)
        if gs is None or _state(gs) != "RequestReady" or gs["metadata"].get("deletionTimestamp"):
            return
        if pod is None or not (pod.get("spec") or {}).get("nodeName"):
            return  # Agones retries; here the pod's next change calls again
        if not (gs.get("status") or {}).get("nodeName"):
            self._scheduled(gs, pod, "Ready")
        else:
            self._set_state(ns, name, "Ready")

    def _set_state(self, ns: str, name: str, state: str) -> None:
        self.store.mutate(
            GAMESERVERS, ns, name, lambda o: o.setdefault("status", {}).__setitem__("state", state)
        )


def _state(gs: dict[str, Any]) -> str:
    return str((gs.get("status") or {}).get("state", ""))


def _has_node_and_ips(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get("podIPs"))


def _pod_failed(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _containers_running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)
