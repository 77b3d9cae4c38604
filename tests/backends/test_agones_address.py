"""Where the agones backend reaches a WebUI: the pod IP of `status.addresses` (type PodIP)
and the WebUI's containerPort. Never `status.address`, which Agones fills with the NODE's
address (agones v1.56.0 pkg/gameservers/gameservers.go, `address()` /
`applyGameServerAddressAndPort`), nor `status.ports`, a node port (none with portPolicy None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet import Claim
from fleet.backends.agones import AgonesBackend
from fleet.model import Phase
from fleet.spec import parse_spec
from tests.backends.harness import harness

GOLDEN = Path(__file__).parent / "golden" / "agones-1.56-gameserverallocation.yaml"
SPEC = """\
backend: agones
profiles:
  - name: default
    max: 2
    agones: {namespace: default, fleet: simple-game-server, port: 7860}
"""


def gameserver(status: dict[str, Any]) -> dict[str, Any]:
    """The GameServer an allocation answer describes, as the watch would show it."""
    meta = status.get("metadata") or {}
    return {
        "apiVersion": "agones.dev/v1",
        "kind": "GameServer",
        "metadata": {
            "name": status["gameServerName"],
            "namespace": "default",
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
            "creationTimestamp": "2025-12-10T00:40:00Z",
        },
        "status": {k: status[k] for k in ("state", "address", "addresses", "nodeName", "ports")},
    }


def record(status: dict[str, Any]):
    return AgonesBackend(parse_spec(SPEC))._record(gameserver(status))


def test_agones_documented_allocation_answer_gives_the_pod_ip_and_webui_port() -> None:
    status = yaml.safe_load(GOLDEN.read_text())["status"]
    rec = record(status)
    assert rec is not None and rec.phase is Phase.READY
    # Not http://192.168.49.2:7506 (the node and a node port): the pod, on the WebUI's port.
    assert rec.addr == "http://10.244.0.17:7860"


@pytest.mark.parametrize(
    ("addresses", "addr"),
    [
        # IPv6-only cluster: the pod's IPv6 address, in brackets (fleet.model.http_address).
        (
            [
                {"type": "InternalIP", "address": "fd00:10:128::2"},
                {"type": "PodIP", "address": "fd00:10:244::17"},
            ],
            "http://[fd00:10:244::17]:7860",
        ),
        # Dual-stack: Agones appends pod.status.podIPs in order; the first is the primary.
        (
            [
                {"type": "InternalIP", "address": "10.128.0.2"},
                {"type": "InternalIP", "address": "fd00:10:128::2"},
                {"type": "PodIP", "address": "fd00:10:244::17"},
                {"type": "PodIP", "address": "10.244.0.17"},
            ],
            "http://[fd00:10:244::17]:7860",
        ),
    ],
    ids=["ipv6-only", "dual-stack"],
)
def test_agones_pod_ip_of_ipv6_and_dual_stack_clusters(addresses: list, addr: str) -> None:
    status = yaml.safe_load(GOLDEN.read_text())["status"]
    status.update(address=addresses[0]["address"], addresses=addresses)
    rec = record(status)
    assert rec is not None and rec.addr == addr


def test_agones_ready_without_a_pod_ip_is_failed_not_offered() -> None:
    """Agones writes the addresses once; when SDK Ready() beat the pod's IP it writes none
    (controller.go, syncGameServerRequestReadyState): nobody can reach that WebUI."""
    status = yaml.safe_load(GOLDEN.read_text())["status"]
    status["addresses"] = [a for a in status["addresses"] if a["type"] != "PodIP"]
    status["metadata"]["labels"] = {"agones.dev/fleet": "simple-game-server"}
    status["state"] = "Ready"
    rec = record(status)
    assert rec is not None and rec.phase is Phase.FAILED and not rec.addr


async def test_agones_a_claim_reaches_the_webui_at_its_pod_ip(
    redis_url: str, tmp_path: Path
) -> None:
    """On the simulator as Agones fills status (node address in `address`): claims work."""
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        assert h.sim is not None
        await h.ready(2)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim), claim
        gs = h.sim.gameserver("sd", claim.pod)
        pod = h.sim.pod("sd", claim.pod)
        assert gs is not None and pod is not None
        assert claim.addr == f"http://{pod['status']['podIP']}:7860"
        assert gs["status"]["address"] not in claim.addr  # the node's address
        assert (await h.whoami(claim))["pod"] == claim.pod
