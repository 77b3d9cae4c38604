"""Pods as a real cluster shows them (`kubectl get pod -o json`), fed through our parsers.

The fixtures in fixtures/pods/ are what the kubelet, the node controller and
the taint manager write, field for field (each file validates against the
official Pod schema below, and survives kubernetes_asyncio's model), for a
pod of ours: Evicted, OOMKilled, in an image pull the kubelet retries (a
20 GB image's first pull timing out) or one that can never work, in a
container runtime error, and on a node that stopped answering (Ready=False
with its containers still ready, then Terminating once the taint manager
deleted it 300 s later).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient

from fleet.backends.kubepods import pod_record
from fleet.model import Phase

FIXTURES = Path(__file__).parent / "fixtures" / "pods"
K8S = "1.34.0"  # Agones 1.56 supports Kubernetes 1.32-1.34
GRACE = 60.0
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # metav1.Time
NODE_LOST_AT = 1748953205.0  # 2025-06-03T12:20:05Z, the node-lost fixtures' Ready transition

# fixture -> (phase, start of the reason, node lost), read GRACE/2 after the node was lost
EXPECTED: dict[str, tuple[Phase, str, bool]] = {
    "evicted": (Phase.FAILED, "Evicted: The node was low on resource: ephemeral-storage", False),
    "oomkilled": (Phase.FAILED, "OOMKilled", False),
    "errimagepull-timeout": (Phase.STARTING, "ErrImagePull: failed to pull", False),
    "imagepullbackoff": (Phase.STARTING, "ImagePullBackOff: Back-off pulling image", False),
    "errimagepull-notfound": (Phase.FAILED, "ErrImagePull: rpc error: code = NotFound", False),
    "createcontainererror": (Phase.STARTING, "CreateContainerError", False),
    "runcontainererror": (Phase.STARTING, "RunContainerError", False),
    "node-lost": (Phase.STARTING, "node lost: gke-sd-gpu-l4-pool-4f5e6d7c-x2kq", True),
    "node-lost-evicting": (Phase.GONE, "being deleted", False),
}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_is_expected() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reads_as_kubernetes_means_it(name: str) -> None:
    phase, reason, lost = EXPECTED[name]
    when = {"node_lost_grace": GRACE, "now": NODE_LOST_AT + GRACE / 2} if lost else {}
    rec = pod_record(load(name), 7860, **when)  # type: ignore[arg-type]
    assert rec.phase is phase and rec.reason.startswith(reason), rec.reason
    assert rec.node_lost is lost


def test_a_lost_node_is_given_up_after_the_grace() -> None:
    """Replaced after node_lost_grace, not 5-6 minutes on when the taint manager deletes it."""
    pod = load("node-lost")
    before = pod_record(pod, 7860, node_lost_grace=GRACE, now=NODE_LOST_AT + GRACE - 1)
    after = pod_record(pod, 7860, node_lost_grace=GRACE, now=NODE_LOST_AT + GRACE)
    assert before.phase is Phase.STARTING and after.phase is Phase.FAILED
    assert after.user == "alice" and after.node_lost
    assert after.reason == "node lost: gke-sd-gpu-l4-pool-4f5e6d7c-x2kq stopped answering 60s ago"


def test_a_failing_readiness_probe_is_not_a_lost_node() -> None:
    """The kubelet says ContainersNotReady, and marks the container unready, itself."""
    pod = load("oomkilled")
    pod["status"]["containerStatuses"][1]["state"] = {
        "running": {"startedAt": "2025-06-03T10:02:41Z"}
    }
    rec = pod_record(pod, 7860, node_lost_grace=GRACE, now=NODE_LOST_AT)
    assert not rec.node_lost


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_a_valid_pod(name: str) -> None:
    """Golden means real: the official schema takes each fixture whole (unknown fields refused),
    and kubernetes_asyncio's model keeps every field of it."""
    pod = load(name)
    kubernetes_validate.validate(pod, K8S, strict=True)
    assert round_trip(pod) == without_nulls(pod)


def round_trip(obj: dict[str, Any], kind: str = "V1Pod") -> Any:
    api = ApiClient.__new__(ApiClient)  # deserialize needs no configuration and no session
    model = api.deserialize(SimpleNamespace(data=json.dumps(obj)), kind)
    return api.sanitize_for_serialization(model)


def without_nulls(value: Any) -> Any:
    """What a model gives back: None fields are left out, times written `+00:00`."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    if isinstance(value, str) and TIME.fullmatch(value):
        return value.removesuffix("Z") + "+00:00"
    return value
