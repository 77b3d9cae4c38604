"""The simulator's HTTP admin endpoint: `POST /_sim/<action>` with the method's keyword arguments.

For a simulator running in another process (see `__main__`), e.g.
`curl -XPOST $URL/_sim/evict -d '{"namespace": "sd", "name": "webui-abcde"}'`.
`GET /_sim/state` summarises pods, GPUs and watches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .resources import PODS

if TYPE_CHECKING:
    from .sim import KubeSim

ACTIONS = (
    "add_node",
    "autoscale_now",
    "clear_pod_failures",
    "compact",
    "crash",
    "drop_allocation_responses",
    "drop_watches",
    "evict",
    "fail_node",
    "inject_allocation_contention",
    "inject_allocation_conflict",
    "inject_api_error",
    "inject_pod_failure",
    "issue_token",
    "lose_node",
    "oom_kill",
    "sdk_ready",
    "vanish",
)


async def run_action(sim: KubeSim, action: str, args: dict[str, Any]) -> Any:
    if action == "state":
        return state(sim)
    if action not in ACTIONS:
        raise ApiError(
            404, f"unknown simulator action {action!r}; known: state, {', '.join(ACTIONS)}"
        )
    try:
        result = getattr(sim, action)(**args)
    except (TypeError, ValueError) as err:
        raise ApiError(400, f"{action}: {err}") from err
    return result if isinstance(result, dict | list | int | str) else None


def state(sim: KubeSim) -> dict[str, Any]:
    phases: dict[str, int] = {}
    for pod in sim.store.iter(PODS):
        phase = pod.get("status", {}).get("phase", "")
        phases[phase] = phases.get(phase, 0) + 1
    return {
        "time": sim.clock.time(),
        "resourceVersion": sim.store.resource_version,
        "pods": phases,
        "gpus": {
            name: {"capacity": node.spec.gpus, "used": node.used["nvidia.com/gpu"]}
            for name, node in sim.cluster.nodes.items()
        },
        "watches": sim.open_watches,
        "requests": sim.request_counts,
        "schema": {"refused": sim.schema.refused, "violations": sim.schema.violations},
    }
