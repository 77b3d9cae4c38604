"""Agones GameServers and GameServerAllocations.

Each GameServer gets a backing Pod of the same name, with Agones' metadata
(gameserver_pod.py), so the pod lifecycle's scheduling, GPU capacity, start
delay, failures and process runner apply to it. The GameServer follows its
pod (Creating -> Starting -> Scheduled -> RequestReady -> Ready; a failed or
lost pod: Unhealthy) and its pod's SDK calls (`sdk_ready`). Allocation picks
a matching GameServer per selector.
"""

from __future__ import annotations

import random
from typing import Any

from . import errors
from .clock import Clock, rfc3339, rfc3339_nano
from .faults import Faults
from .gameserver_pod import gameserver_pod
from .lifecycle import PodLifecycle
from .resources import GAMESERVERS, PODS
from .selectors import LabelSelector, selector_problems
from .store import Change, Store, check_preconditions, clone

GS_LABEL = "agones.dev/gameserver"
FLEET_LABEL = "agones.dev/fleet"
GSS_LABEL = "agones.dev/gameserverset"
LAST_ALLOCATED = "agones.dev/last-allocated"
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

    def start(self) -> None:
        self.store.subscribe(GAMESERVERS, self._on_gameserver)
        self.store.subscribe(PODS, self._on_pod)

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
        if state in BEFORE_SCHEDULED and (pod.get("spec") or {}).get("nodeName"):
            self._scheduled(gs, pod)
            state = "Scheduled"
        if state == "Scheduled" and _pod_ready(pod):
            self._set_state(ns, name, "RequestReady")
            self._set_state(ns, name, "Ready")
        elif state == "RequestReady":  # SDK Ready() came before the pod had a node
            self._request_ready(ns, name)

    def _scheduled(self, gs: dict[str, Any], pod: dict[str, Any], state: str = "Scheduled") -> None:
        meta = gs["metadata"]
        sim = self.lifecycle.pods.get((meta["namespace"], meta["name"]))
        address = sim.ip if sim and sim.ip else ""
        node = pod["spec"]["nodeName"]

        def write(o: dict[str, Any]) -> None:
            ports = o["spec"].get("ports") or []
            o["status"].update(
                state=state,
                nodeName=node,
                address=address,
                addresses=[
                    {"type": "InternalIP", "address": address},
                    {"type": "PodIP", "address": address},
                ],
                ports=[
                    {
                        "name": p.get("name", ""),
                        "port": int(p.get("hostPort") or p.get("containerPort") or 0),
                    }
                    for p in ports
                ]
                or None,
            )

        self.store.mutate(GAMESERVERS, meta["namespace"], meta["name"], write)

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
        still missing): agones v1.56.0 `pkg/gameservers/controller.go`,
        `syncGameServerRequestReadyState`."""
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

    # --- GameServerAllocation ------------------------------------------------------------

    def allocate(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = clone(body.get("spec") or {})
        selectors = (
            spec.get("selectors")
            or [
                *(spec.get("preferred") or []),
                *([spec["required"]] if spec.get("required") else []),
            ]
            or [{}]
        )
        for i, sel in enumerate(selectors):
            # GameServerSelector.Validate: metav1.LabelSelectorAsSelector must accept it.
            problems = selector_problems(sel)
            if problems:
                raise errors.invalid(
                    "GameServerAllocation",
                    "",
                    f"spec.selectors[{i}].labelSelector: Invalid value: "
                    f"Error converting label selector: {'; '.join(problems)}",
                    "allocation.agones.dev",
                )
            sel.setdefault("gameServerState", "Ready")
            if sel["gameServerState"] not in ("Ready", "Allocated"):
                raise errors.invalid(
                    "GameServerAllocation",
                    "",
                    f'spec.selectors.gameServerState: Unsupported value: "{sel["gameServerState"]}": supported values: "Allocated", "Ready"',
                    "allocation.agones.dev",
                )
        spec["selectors"] = selectors
        spec.setdefault("scheduling", "Packed")
        if self.faults.allocation_contention > 0:
            self.faults.allocation_contention -= 1
            return _allocation(ns, spec, "Contention", None)
        for sel in selectors:
            chosen = self._pick(ns, sel, spec["scheduling"])
            if chosen is not None:
                gs = self._apply_allocation(chosen, spec.get("metadata") or {})
                response = _allocation(ns, spec, "Allocated", gs)
                if self.faults.allocation_drops > 0:
                    self.faults.allocation_drops -= 1
                    raise errors.DropResponse(gs["metadata"]["name"])
                return response
        return _allocation(ns, spec, "UnAllocated", None)

    def _pick(self, ns: str, selector: dict[str, Any], scheduling: str) -> dict[str, Any] | None:
        labels = LabelSelector.from_spec(selector)
        state = selector["gameServerState"]
        candidates = [
            gs
            for gs in self.store.iter(GAMESERVERS, ns)
            if _state(gs) == state
            and not gs["metadata"].get("deletionTimestamp")
            and labels.matches(gs["metadata"].get("labels"))
        ]
        if not candidates:
            return None
        if scheduling == "Distributed":
            return self.rng.choice(candidates)
        allocated_on: dict[str, int] = {}
        for gs in self.store.iter(GAMESERVERS, ns):
            if _state(gs) == "Allocated":
                node = gs["status"].get("nodeName", "")
                allocated_on[node] = allocated_on.get(node, 0) + 1
        return min(
            candidates,
            key=lambda g: (
                -allocated_on.get(g["status"].get("nodeName", ""), 0),
                g["metadata"]["creationTimestamp"],
                g["metadata"]["name"],
            ),
        )

    def _apply_allocation(self, gs: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
        now = rfc3339_nano(self.clock.time())

        def write(o: dict[str, Any]) -> None:
            meta = o["metadata"]
            meta["labels"] = {**(meta.get("labels") or {}), **(metadata.get("labels") or {})}
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                **(metadata.get("annotations") or {}),
                LAST_ALLOCATED: now,
            }
            o["status"]["state"] = "Allocated"

        meta = gs["metadata"]
        return self.store.mutate(GAMESERVERS, meta["namespace"], meta["name"], write) or gs


def _allocation(
    ns: str, spec: dict[str, Any], state: str, gs: dict[str, Any] | None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "state": state,
        "gameServerName": "",
        "ports": None,
        "address": "",
        "addresses": None,
        "nodeName": "",
        "source": "",
    }
    if gs is not None:
        st = gs["status"]
        status.update(
            gameServerName=gs["metadata"]["name"],
            ports=st.get("ports"),
            address=st.get("address", ""),
            addresses=st.get("addresses"),
            nodeName=st.get("nodeName", ""),
            source="local",
            metadata={
                "labels": gs["metadata"].get("labels") or {},
                "annotations": gs["metadata"].get("annotations") or {},
            },
        )
    return {
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "metadata": {
            "name": gs["metadata"]["name"] if gs else "",
            "namespace": ns,
            "creationTimestamp": None,
        },
        "spec": spec,
        "status": status,
    }


def _state(gs: dict[str, Any]) -> str:
    return str((gs.get("status") or {}).get("state", ""))


def _pod_failed(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _containers_running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)
