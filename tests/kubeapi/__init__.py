"""A test Kubernetes API server that the real `kubernetes_asyncio` client talks to.

It serves pods, nodes, events and the Agones kinds over REST and watch, and
simulates their lifecycle (scheduling onto GPU nodes, start delays,
readiness, failures, fleets and allocation) on an injectable clock.

    async with KubeSim(nodes=2, start_delay=(60, 120), time_scale=600) as sim:
        await config.load_kube_config(config_file=str(sim.write_kubeconfig(tmp_path / "kc")))
        ...
"""

from .autoscalers import buffer_replicas
from .clock import Clock, ManualClock, ScaledClock
from .errors import ApiError
from .faults import ApiErrorRule, PodFailure, PodFailureRule
from .nodes import GPU, NodeSpec
from .processes import PodProcess, ProcessInfo, ProcessRunner
from .resources import (
    FLEETAUTOSCALERS,
    FLEETS,
    GAMESERVERALLOCATIONS,
    GAMESERVERS,
    NODES,
    PODS,
    Resource,
)
from .sim import KubeSim
from .thread import KubeSimThread

__all__ = [
    "FLEETAUTOSCALERS",
    "FLEETS",
    "GAMESERVERALLOCATIONS",
    "GAMESERVERS",
    "GPU",
    "NODES",
    "PODS",
    "ApiError",
    "ApiErrorRule",
    "Clock",
    "KubeSim",
    "KubeSimThread",
    "ManualClock",
    "NodeSpec",
    "PodFailure",
    "PodFailureRule",
    "PodProcess",
    "ProcessInfo",
    "ProcessRunner",
    "Resource",
    "ScaledClock",
    "buffer_replicas",
]
