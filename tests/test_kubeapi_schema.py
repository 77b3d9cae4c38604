"""What the backends send, and what the test API server answers, against the official schemas.

A simulator that shares our assumptions proves nothing: every pod the
kubernetes backend builds, and every pod, node and event the simulator
returns in each state it simulates (running, pulling an image that fails,
evicted, OOM-killed, on a lost node, evicted from it by the taint manager),
must validate against Kubernetes' own OpenAPI schema (kubernetes-validate,
unknown fields refused) and survive kubernetes_asyncio's models unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_asyncio import client, config

from fleet.backends.kubepods import build_pod
from fleet.spec import parse_spec
from tests.backends.test_pod_fixtures import round_trip, without_nulls
from tests.kubeapi import KubeSim, ManualClock, NodeSpec

K8S = ["1.32.0", "1.34.0"]  # what Agones 1.56 supports
PROFILES = """\
backend: kubernetes
profiles:
  - name: plain
    max: 2
    kubernetes: {namespace: sd, image: "example/webui:1", volumes: {models: null, outputs: null}}
  - name: full
    max: 2
    kubernetes:
      namespace: sd
      image: example/webui:1
      gpus: 1
      readiness_port: 7861
      readiness_path: /ready
      env: {WEBUI_ALLOW_EXTENSIONS: "1"}
      resources: {requests: {cpu: "3", memory: 16Gi}, limits: {memory: 24Gi}}
      node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      pod_template: {spec: {terminationGracePeriodSeconds: 20}}
"""
SPEC = parse_spec(PROFILES)


def valid(obj: dict[str, Any], kind: str) -> None:
    for version in K8S:
        kubernetes_validate.validate(obj, version, strict=True)
    assert round_trip(obj, kind) == without_nulls(obj), f"{kind} lost fields in the model"


@pytest.mark.parametrize("profile", [p.name for p in SPEC.profiles])
def test_the_pods_the_backend_sends_are_valid(profile: str) -> None:
    valid(build_pod(SPEC.profile(profile), f"{profile}-0a1b2c3d"), "V1Pod")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeSim, client.CoreV1Api, ManualClock]]:
    clock = ManualClock()
    l4 = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    nodes = [NodeSpec(f"gke-l4-{i}", 1, l4) for i in range(6)]
    async with KubeSim(nodes=nodes, clock=clock, start_delay=5, ready_delay=2, seed=1) as sim:
        cfg = client.Configuration()
        kubeconfig = sim.write_kubeconfig(tmp_path / "kc", namespace="sd")
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            yield sim, client.CoreV1Api(api), clock


async def _raw(core: client.CoreV1Api, name: str) -> dict[str, Any]:
    response = await core.read_namespaced_pod(name, "sd", _preload_content=False)
    return await response.json()


async def test_what_the_server_answers_is_valid_in_every_state(
    cluster: tuple[KubeSim, client.CoreV1Api, ManualClock],
) -> None:
    sim, core, clock = cluster
    sim.inject_pod_failure("image_pull", name="full-pull*")
    names = ["full-run", "full-pull1", "full-evict", "full-oom", "full-lost"]
    for name in names:
        await core.create_namespaced_pod("sd", build_pod(SPEC.profile("full"), name))
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in names}

    async def look() -> None:
        for name in names:
            if sim.pod("sd", name) is not None:
                seen[name].append(await _raw(core, name))

    await look()  # Pending
    await clock.advance(10)
    await look()  # Running and Ready; the pull failing
    sim.evict("sd", "full-evict")
    sim.oom_kill("sd", "full-oom")
    node = sim.pod("sd", "full-lost")["spec"]["nodeName"]
    sim.lose_node(node, evict_after=300)
    await clock.advance(1)
    await look()
    await clock.advance(300)
    await look()  # the lost node's pods Terminating
    lost = seen["full-lost"][-1]
    assert lost["metadata"].get("deletionTimestamp"), "the taint manager did not delete it"
    for name, states in seen.items():
        assert len(states) >= 3, name
        for obj in states:
            valid(obj, "V1Pod")
    nodes = (await (await core.list_node(_preload_content=False)).json())["items"]
    for obj in nodes:
        valid(obj, "V1Node")
    events = await core.list_namespaced_event("sd", _preload_content=False)
    for obj in (await events.json())["items"]:
        valid(obj, "CoreV1Event")
    await asyncio.sleep(0)
