"""Nodes and their extended-resource capacity (nvidia.com/gpu), and the scheduler's fit check.

Only integer extended resources named in a node's capacity are accounted for;
CPU and memory are assumed to always fit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # other extended resources

    def capacity(self) -> dict[str, int]:
        return {GPU: self.gpus, **self.extra}


@dataclass
class NodeState:
    spec: NodeSpec
    address: str
    used: Counter[str] = field(default_factory=Counter)
    pods: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def free(self, resource: str) -> int:
        return self.spec.capacity().get(resource, 0) - self.used[resource]

    def fits(self, requests: dict[str, int]) -> list[str]:
        """Names of the resources that do not fit (empty list: the pod fits)."""
        return [r for r, n in requests.items() if n > self.free(r)]


def pod_requests(spec: dict[str, Any], tracked: set[str]) -> dict[str, int]:
    """Sum the pod's containers' requests (or limits, which default requests) of tracked resources."""
    totals: Counter[str] = Counter()
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            if name in tracked:
                totals[name] += int(str(value))
    return dict(totals)


class Cluster:
    """Capacity bookkeeping; the lifecycle decides when to schedule."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        self.nodes: dict[str, NodeState] = {}
        for spec in nodes:
            self.add(spec)

    def add(self, spec: NodeSpec) -> NodeState:
        if spec.name in self.nodes:
            raise ValueError(f"node {spec.name} exists")
        index = len(self.nodes) + 1
        # A loopback address ending in .255, which IpPool never gives a pod: dialling a
        # node (say, a GameServer's status.address) is refused at once, as on a node
        # where nothing listens on the port, instead of leaving this machine.
        state = NodeState(spec, f"127.{index // 250 % 254 + 1}.{index % 250}.255")
        self.nodes[spec.name] = state
        return state

    def remove(self, name: str) -> list[tuple[str, str]]:
        """Forget a node; returns the pods that were bound to it."""
        state = self.nodes.pop(name)
        return list(state.pods)

    def tracked(self) -> set[str]:
        return {r for n in self.nodes.values() for r in n.spec.capacity()}

    def find(self, pod: dict[str, Any]) -> tuple[str | None, str]:
        """Choose a node for the pod (least allocated first), or explain why none fits."""
        spec = pod.get("spec") or {}
        requests = pod_requests(spec, self.tracked() | {GPU})
        selector = spec.get("nodeSelector") or {}
        reasons: Counter[str] = Counter()
        candidates = []
        for state in self.nodes.values():
            if any(state.spec.labels.get(k) != v for k, v in selector.items()):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            missing = state.fits(requests)
            if missing:
                for name in missing:
                    reasons[f"Insufficient {name}"] += 1
                continue
            candidates.append(state)
        if candidates:
            best = min(candidates, key=lambda s: (sum(s.used.values()), s.spec.name))
            return best.spec.name, ""
        return None, unschedulable_message(len(self.nodes), reasons)

    def bind(self, node: str, pod_key: tuple[str, str], pod: dict[str, Any]) -> None:
        state = self.nodes[node]
        requests = pod_requests(pod.get("spec") or {}, self.tracked())
        state.pods[pod_key] = requests
        state.used.update(requests)

    def release(self, node: str | None, pod_key: tuple[str, str]) -> bool:
        """Give the pod's resources back; True if anything was freed."""
        state = self.nodes.get(node or "")
        if state is None or pod_key not in state.pods:
            return False
        state.used.subtract(state.pods.pop(pod_key))
        return True

    def node_object(self, name: str) -> dict[str, Any]:
        state = self.nodes[name]
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110"}
        capacity.update({k: str(v) for k, v in state.spec.capacity().items()})
        return {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    **state.spec.labels,
                },
            },
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "addresses": [
                    {"type": "InternalIP", "address": state.address},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                    },
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": "",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "v1.36.0",
                    "kubeletVersion": "v1.36.0",
                    "machineID": "",
                    "operatingSystem": "linux",
                    "osImage": "kubesim",
                    "systemUUID": "",
                },
            },
        }


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    """The scheduler's FailedScheduling text, e.g. `0/1 nodes are available: 1 Insufficient nvidia.com/gpu. ...`."""
    if total == 0:
        return "no nodes available to schedule pods"
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return (
        f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are available: "
        f"{total} No preemption victims found for incoming pod."
    )
