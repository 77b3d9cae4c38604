"""What the simulated kubelet knows about one pod, and the `status` it reports for it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from .clock import rfc3339
from .faults import PodFailureRule
from .podspec import qos_class
from .processes import PodProcess


@dataclass
class ContainerState:
    """One state shared by all of a pod's containers (they start, crash and restart together)."""

    waiting: tuple[str, str] | None = ("ContainerCreating", "")  # (reason, message)
    running_since: float | None = None
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    ready: bool = False
    generation: int = 0  # bumps on every (re)start; names the containerID


@dataclass
class PodSim:
    namespace: str
    name: str
    uid: str
    node: str | None = None
    ip: str | None = None
    host_ip: str | None = None
    ip_visible: bool = False
    phase: str = "Pending"
    unschedulable: str | None = None
    initialized: bool = False
    start_time: float | None = None
    container: ContainerState = field(default_factory=ContainerState)
    reason: str | None = None
    message: str | None = None
    disruption: str | None = None  # DisruptionTarget reason, e.g. TerminationByKubelet
    deleting: bool = False
    failure: PodFailureRule | None = None
    port: int = 0
    process: PodProcess | None = None
    task: asyncio.Task[None] | None = None
    conditions: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def terminal(self) -> bool:
        return self.phase in ("Failed", "Succeeded")

    def terminated_now(
        self, now: float, exit_code: int, reason: str, message: str = ""
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": rfc3339(self.container.running_since or now),
            "finishedAt": rfc3339(now),
            "containerID": self.container_id(),
        }
        if message:
            state["message"] = message
        return state

    def container_id(self) -> str:
        digest = hashlib.sha256(f"{self.uid}/{self.container.generation}".encode()).hexdigest()
        return f"containerd://{digest}"

    def _condition(
        self, kind: str, ok: bool, now: float, reason: str = "", message: str = ""
    ) -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self.conditions.get(kind)
        if previous is None or previous[0] != status:
            self.conditions[kind] = (status, now)
        cond: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(self.conditions[kind][1]),
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def render(self, spec: dict[str, Any], now: float) -> dict[str, Any]:
        """The pod's `status`, as the kubelet and scheduler would have written it."""
        containers = [c.get("name", "") for c in spec.get("containers") or []]
        status: dict[str, Any] = {"phase": self.phase, "qosClass": qos_class(spec)}
        if self.node is None:
            if self.unschedulable:
                status["conditions"] = [
                    self._condition("PodScheduled", False, now, "Unschedulable", self.unschedulable)
                ]
            return status
        conditions = []
        if self.disruption:
            conditions.append(
                self._condition("DisruptionTarget", True, now, self.disruption, "Kubelet")
            )
        ready = self.container.ready and not self.terminal
        unready = "" if ready else f"containers with unready status: [{' '.join(containers)}]"
        not_ready_reason = (
            "" if ready else ("PodFailed" if self.phase == "Failed" else "ContainersNotReady")
        )
        if self.initialized:  # the kubelet has seen the pod; before that only the scheduler wrote
            conditions.append(self._condition("PodReadyToStartContainers", not self.terminal, now))
            conditions.append(self._condition("Initialized", True, now))
            conditions.append(self._condition("Ready", ready, now, not_ready_reason, unready))
            conditions.append(
                self._condition("ContainersReady", ready, now, not_ready_reason, unready)
            )
        conditions.append(self._condition("PodScheduled", True, now))
        status["conditions"] = conditions
        if self.host_ip:
            status["hostIP"] = self.host_ip
            status["hostIPs"] = [{"ip": self.host_ip}]
        if self.ip and self.ip_visible:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.start_time is not None:
            status["startTime"] = rfc3339(self.start_time)
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        if self.initialized:
            status["containerStatuses"] = [
                self._container_status(c, now) for c in spec.get("containers") or []
            ]
        return status

    def _container_status(self, container: dict[str, Any], now: float) -> dict[str, Any]:
        c = self.container
        image = container.get("image", "")
        started = c.running_since is not None and c.terminated is None and c.waiting is None
        state: dict[str, Any]
        if c.terminated is not None:
            state = {"terminated": c.terminated}
        elif c.waiting is not None:
            reason, message = c.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        else:
            state = {"running": {"startedAt": rfc3339(c.running_since or now)}}
        status: dict[str, Any] = {
            "name": container.get("name", ""),
            "image": image,
            "imageID": _image_id(image) if c.generation else "",
            "ready": c.ready and started and not self.terminal,
            "restartCount": c.restart_count,
            "started": started,
            "state": state,
            "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
        }
        if c.generation:
            status["containerID"] = self.container_id()
        return status


def _image_id(image: str) -> str:
    name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
    return f"{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"
