"""A node that stops reporting (power lost, partitioned): what the control plane does, and when.

As Kubernetes v1.32-1.34 does it:
- the node lifecycle controller (nodelifecycle/node_lifecycle_controller.go,
  `tryUpdateNodeHealth`), after node-monitor-grace-period without a heartbeat,
  sets the node's conditions Unknown ("NodeStatusUnknown", "Kubelet stopped
  posting node status.") and taints it node.kubernetes.io/unreachable
  (NoSchedule, and NoExecute with a timeAdded);
- `MarkPodsNotReady` (controller/util/node/controller_utils.go) flips each of
  its pods' Ready condition to False (`UpdatePodCondition`: a new
  lastTransitionTime) and nothing else: containerStatuses still say ready and
  running, since only the kubelet, gone, writes them;
- taint eviction (tainteviction/taint_eviction.go): a pod tolerates the
  unreachable taint 300 s (the DefaultTolerationSeconds admission plugin adds
  that toleration), then `addConditionAndDeletePod` adds DisruptionTarget
  (DeletionByTaintManager) and deletes it. With no kubelet to confirm, the pod
  stays Terminating (deletionTimestamp set) until its node comes back or is
  removed.
The node-monitor-grace-period itself is not simulated: the node is lost at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .clock import rfc3339
from .resources import NODES, PODS

if TYPE_CHECKING:
    from .sim import KubeSim

TOLERATION_SECONDS = 300.0  # DefaultTolerationSeconds for node.kubernetes.io/unreachable
UNREACHABLE = "node.kubernetes.io/unreachable"


def lose_node(sim: KubeSim, name: str, evict_after: float | None = TOLERATION_SECONDS) -> list[str]:
    """The node stops reporting; its pods read as above. Returns `namespace/name` of its pods.

    `evict_after` (simulated seconds): when the taint eviction deletes them (None: never).
    """
    pods = sim.cluster.remove(name)  # nothing more is scheduled there
    now = sim.clock.time()

    def unknown(node: dict[str, Any]) -> None:
        for cond in node["status"].get("conditions") or []:
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=rfc3339(now),
            )
        node["spec"]["taints"] = [
            {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": rfc3339(now)},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(now)},
        ]

    sim.store.mutate(NODES, None, name, unknown)
    for ns, pod in pods:
        p = sim.lifecycle.pods.get((ns, pod))
        if p is not None:
            # The kubelet is gone with the node: nothing writes this pod's status
            # any more, and its WebUI cannot be reached.
            sim.lifecycle._stop_kubelet(p)
        sim.store.mutate(PODS, ns, pod, lambda o: _not_ready(o, now))
    if evict_after is not None:
        task = asyncio.ensure_future(_evict_later(sim, pods, evict_after))
        sim.lifecycle._tasks.add(task)  # cancelled with the simulator
        task.add_done_callback(sim.lifecycle._tasks.discard)
    return [f"{ns}/{pod}" for ns, pod in pods]


def _not_ready(pod: dict[str, Any], now: float) -> None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "False":
            cond["status"] = "False"
            cond["lastTransitionTime"] = rfc3339(now)


async def _evict_later(sim: KubeSim, pods: list[tuple[str, str]], after: float) -> None:
    await sim.clock.sleep(after)
    now = sim.clock.time()
    for ns, pod in pods:

        def evict(o: dict[str, Any]) -> None:
            conditions = o.setdefault("status", {}).setdefault("conditions", [])
            conditions.insert(
                0,
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(now),
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                },
            )
            grace = int((o.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            o["metadata"]["deletionTimestamp"] = rfc3339(now + grace)
            o["metadata"]["deletionGracePeriodSeconds"] = grace

        sim.store.mutate(PODS, ns, pod, evict)
