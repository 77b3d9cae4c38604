"""Scale-down retires the warm pods of the least-used nodes first (issue 19 §3), through
the kubernetes backend on the test API server: its scheduler puts pods on nodes, the
controller reads each pod's node from the pod, a real Redis keeps the index."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fleet import Claim
from fleet.spec import parse_spec
from tests.backends.harness import KUBERNETES, Harness, harness


def live_nodes(h: Harness) -> Counter[str]:
    """node -> pods on it the platform still runs (not being deleted)."""
    assert h.sim is not None
    return Counter(
        p["spec"].get("nodeName", "")
        for p in h.sim.pods("sd")
        if not p["metadata"].get("deletionTimestamp")
    )


def resize(h: Harness, buffer: int) -> None:
    h.fleet.use_spec(parse_spec(KUBERNETES.format(min=0, buffer=buffer, max=4)))
    h.controller.wake()


async def test_scale_down_empties_the_node_without_sessions(redis_url: str, tmp_path: Path) -> None:
    """node-1's two pods became Ready first and one of them is claimed; node-2's two came
    later. Asked for 2 pods fewer, the controller retires both of node-2's (the node can
    go), not the oldest warm pod, which sits beside a session on node-1 (before: oldest
    first, which kept both nodes busy)."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=2, max=4, nodes=1,
                       gpus_per_node=2) as h:  # fmt: skip
        assert h.sim is not None
        await h.ready(2)
        assert live_nodes(h) == {"node-1": 2}
        h.sim.add_node("node-2", gpus=2)
        resize(h, buffer=4)
        await h.ready(4)
        assert live_nodes(h) == {"node-1": 2, "node-2": 2}

        claim = await h.claim("ann")  # the oldest Ready pod: one of node-1's
        assert isinstance(claim, Claim)
        ann = h.sim.pod("sd", claim.pod)
        assert ann is not None and ann["spec"]["nodeName"] == "node-1"
        assert claim.node == "node-1"  # known at the claim: the session_start line names it

        resize(h, buffer=1)  # target 1 claimed + 1 warm: two of the three warm pods go
        await h.until(lambda: sum(live_nodes(h).values()) == 2, what="two pods left")
        assert live_nodes(h) == {"node-1": 2}
        assert await h.counts() == {"warming": 0, "ready": 1, "claimed": 1, "queue": 0}
        still = await h.fleet.lookup("ann")
        assert still is not None and still.pod == claim.pod
