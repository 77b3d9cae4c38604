"""Which warm pods a scale-down (or a template roll) retires first: those on the
least-used nodes, so that GPU nodes empty out and can be removed.

The cluster autoscaler removes a node only when every pod on it can be moved,
and a pod "not backed by a controller object" never can (kubernetes/autoscaler,
cluster-autoscaler/FAQ.md, "What types of pods can prevent CA from removing a
node?"): our kubernetes backend's pods are such bare pods, so one warm pod left
on a node keeps that whole GPU node billed. Hence: nodes with the fewest claimed
pods first, then those with fewer pods overall, then the node whose oldest warm
pod is oldest; on one node, the oldest warm pod first. Agones sorts a Packed
Fleet's scale-down the same way itself (v1.56.0, pkg/gameserversets/gameserversets.go,
`sortGameServersByPackedStrategy`: least full node first), so `manages_replicas`
backends never come here. Pods without a node (the local backend, one machine)
share the node "": the order is then the ready set's, oldest Ready first, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def least_used_first(ready: Sequence[tuple[str, str, float]], claimed: Iterable[str]) -> list[str]:
    """The ids of READY (pod id, node, when it became Ready) in the order to retire them;
    `claimed`: the node of each claimed pod of the same profile."""
    in_use = Counter(claimed)
    pods = in_use + Counter(node for _, node, _ in ready)
    oldest: dict[str, float] = {}
    for _, node, since in ready:
        oldest[node] = min(oldest.get(node, since), since)
    order = sorted(
        ready,
        key=lambda r: (in_use[r[1]], pods[r[1]], oldest[r[1]], r[1], r[2], r[0]),
    )
    return [pod_id for pod_id, _, _ in order]
