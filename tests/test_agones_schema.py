"""The Agones objects we send and the simulator answers, against Agones v1.56.0's schemas.

The simulator (tests/kubeapi/agones_schema.py) holds every Agones object it
accepts, and every one it keeps or answers, to the CRD schemas of Agones
v1.56.0 (GameServerAllocation: a schema derived from Agones' Go types):
a client's invalid object gets a 422 naming the field, the simulator's own
fails the test when it stops. Here: that the check can fail, that Agones'
own documented objects pass it (so it is not stricter than Agones where it
matters), and that what our code renders, patches and allocates passes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fleet import Claim
from fleet.backends.agones_objects import allocation_body
from fleet.render import render
from fleet.slug import slugify
from fleet.spec import parse_spec
from tests.backends.harness import harness
from tests.kubeapi import FLEETS, GAMESERVERALLOCATIONS, GAMESERVERS, KubeSim
from tests.kubeapi.agones_schema import SchemaViolation, problems
from tests.test_kubeapi import AGONES, ALLOCATION, MERGE, NS, cluster, fleet_body, status_of
from tests.test_kubeapi_schema import valid

GOLDEN = Path(__file__).parent / "backends" / "golden"
PROFILES = """\
backend: agones
profiles:
  - name: l4
    max: 4
    agones:
      namespace: sd
      fleet: webui-l4
      image: example/webui:1
      gpus: 1
      readiness_port: 7861
      env: {WEBUI_ALLOW_EXTENSIONS: "1"}
      resources: {requests: {cpu: 3, memory: 16Gi}, limits: {memory: 24Gi}}
      node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      pod_template: {spec: {terminationGracePeriodSeconds: 20}}
  - name: plain
    max: 1
    agones: {namespace: sd, fleet: webui-plain, image: "example/webui:1"}
"""


def golden(name: str) -> dict[str, Any]:
    """A golden YAML file's object as JSON would carry it (timestamps as RFC 3339 text)."""
    doc = next(d for d in yaml.safe_load_all((GOLDEN / name).read_text()) if d)
    stamp = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    return json.loads(json.dumps(doc, default=stamp))


# --- offline: what our code makes ---------------------------------------------------------


def test_the_fleets_we_render_and_the_allocations_we_send_are_valid() -> None:
    fleets = render(parse_spec(PROFILES))
    assert len(fleets) == 2
    for fleet in fleets:
        assert problems(FLEETS, fleet) == [], fleet["metadata"]["name"]
        # What the backend's replicas patch (a merge patch of spec.replicas) makes of it.
        sized = {**fleet, "spec": {**fleet["spec"], "replicas": 3}}
        assert problems(FLEETS, sized) == []
    for user in ("alice@example.com", "https://issuer.example/7f3e-sub", "Ünïcode Name"):
        body = allocation_body("webui-l4", user, slugify(user))
        assert problems(GAMESERVERALLOCATIONS, body) == [], user


def test_agones_documented_objects_pass() -> None:
    """Agones' own: its full GameServerAllocation example (every field the API takes), an
    answer from its docs, and the answer of tests/backends/golden (PodIP addresses)."""
    assert (
        problems(GAMESERVERALLOCATIONS, golden("agones-1.56-gameserverallocation-request.yaml"))
        == []
    )
    assert (
        problems(GAMESERVERALLOCATIONS, golden("agones-1.56-gameserverallocation-answer.yaml"))
        == []
    )
    status = golden("agones-1.56-gameserverallocation.yaml")["status"]
    answer = {"apiVersion": "allocation.agones.dev/v1", "kind": "GameServerAllocation",
              "metadata": {"namespace": "default"}, "spec": {}, "status": status}  # fmt: skip
    assert problems(GAMESERVERALLOCATIONS, answer) == []


@pytest.mark.parametrize(
    ("res", "change", "field"),
    [
        (FLEETS, lambda f: f["spec"]["template"]["spec"].update(portz=[]), "spec.template.spec.portz"),
        (FLEETS, lambda f: f["spec"].update(replicas="3"), "spec.replicas"),
        (FLEETS, lambda f: f["metadata"].update(labelz={}), "metadata.labelz"),
        (GAMESERVERALLOCATIONS, lambda a: a["spec"]["selectors"][1].update(gameServerState="Reserved"),
         "spec.selectors[1].gameServerState"),
        (GAMESERVERALLOCATIONS, lambda a: a["spec"].update(metaPatch={}), "spec.metaPatch"),
    ],
    ids=["unknown-field", "wrong-type", "unknown-metadata", "bad-enum", "allocation-unknown-field"],
)  # fmt: skip
def test_an_invalid_object_is_named_by_its_field(res: Any, change: Any, field: str) -> None:
    if res is FLEETS:
        obj = render(parse_spec(PROFILES))[0]
    else:
        obj = allocation_body("webui-l4", "alice", "alice")
    change(obj)
    found = problems(res, obj)
    assert len(found) == 1 and found[0].startswith(f"{field}: Invalid value"), found


# --- through the simulator ------------------------------------------------------------------


async def test_the_simulator_refuses_invalid_agones_objects_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """As a real API server: 422 Invalid naming each field. Before, kubesim took them all."""
    async with cluster(tmp_path, nodes=2, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        refused: list[str] = []

        async def refuses(call: Any) -> None:
            with pytest.raises(ApiException) as err:
                await call
            assert err.value.status == 422, err.value.body
            refused.append(status_of(err.value)["message"])

        typo = fleet_body(replicas=1)
        typo["spec"]["template"]["spec"]["portz"] = typo["spec"]["template"]["spec"].pop("ports")
        await refuses(custom.create_namespaced_custom_object(*AGONES, NS, "fleets", typo))
        number = fleet_body(replicas=1)  # a quantity as a number: the CRD says string
        container = number["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
        container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
        await refuses(custom.create_namespaced_custom_object(*AGONES, NS, "fleets", number))
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        await refuses(
            custom.patch_namespaced_custom_object(
                *AGONES, NS, "fleets", "webui", {"spec": {"replicas": "3"}}, _content_type=MERGE
            )
        )
        body = allocation_body("webui", "alice", "alice")
        body["spec"]["selectors"][1]["gameServerState"] = "Reserved"
        await refuses(
            custom.create_namespaced_custom_object(*ALLOCATION, NS, "gameserverallocations", body)
        )
        assert "spec.template.spec.portz: Invalid value: field not declared" in refused[0]
        assert "containers[0].resources.limits.nvidia.com/gpu: Invalid value: 1" in refused[1]
        assert "spec.replicas: Invalid value" in refused[2]
        assert "spec.selectors[1].gameServerState: Invalid value" in refused[3]
        assert sim.fleet(NS, "webui")["spec"]["replicas"] == 1
        assert len(sim.schema.take()) == 4  # expected here: the simulator stops clean


async def test_the_simulator_fails_the_test_when_it_breaks_the_schema_itself() -> None:
    """A status the simulator writes that Agones' schema refuses is never stored, and the
    simulator's stop fails the test: a simulator bug cannot pass for our code's success."""
    sim = await KubeSim(nodes=1, time_scale=600).start()
    try:
        sim.agones.create_gameserver(
            NS, fleet_body()["spec"]["template"] | {"metadata": {"name": "gs"}}
        )
        with pytest.raises(SchemaViolation, match="status.state"):
            sim.store.mutate(GAMESERVERS, NS, "gs", lambda o: o["status"].update(state="Bogus"))
        assert sim.gameserver(NS, "gs")["status"]["state"] != "Bogus"  # never stored
    except BaseException:
        sim.schema.take()
        await sim.stop()
        raise
    with pytest.raises(SchemaViolation, match="kubesim stored GameServer 'gs': status.state"):
        await sim.stop()


async def test_what_the_agones_backend_sends_and_the_simulator_answers_is_valid(
    redis_url: str, tmp_path: Path
) -> None:
    """The backend end to end: the rendered Fleet created, its replicas patched, allocations
    sent and answered, GameServers made, allocated, put back by SDK Ready() and deleted.
    Each went through the simulator's check; and each object it holds at the end is
    re-checked here. Before: Fleet status carried `shutdownReplicas` (a GameServerSet's),
    allocation answers `ports: null`, `addresses: null`."""
    async with harness("agones", redis_url, tmp_path, buffer=2, max=3) as h:
        sim = h.sim
        assert sim is not None
        await h.ready(2)
        alice, bob = await h.claim("alice"), await h.claim("bob")
        assert isinstance(alice, Claim) and isinstance(bob, Claim)
        sim.sdk_ready("sd", alice.pod)  # its own pod puts it back: the broker ends it
        await h.until(lambda: not sim.gameserver("sd", alice.pod), what="alice's pod deleted")
        answer = await h.backend.custom.create_namespaced_custom_object(  # type: ignore[attr-defined]
            *ALLOCATION, "sd", "gameserverallocations", allocation_body("webui", "carol", "carol")
        )
        assert problems(GAMESERVERALLOCATIONS, answer) == [], answer
        counts = sim.request_counts
        assert counts.get("create fleets") and counts.get("patch fleets"), counts
        assert counts.get("create gameserverallocations", 0) >= 2, counts
        for gs in sim.gameservers("sd"):
            assert problems(GAMESERVERS, gs) == [], gs["metadata"]["name"]
        assert problems(FLEETS, sim.fleet("sd", "webui")) == []
        for pod in sim.pods("sd"):  # the GameServers' pods, Agones' env and ports added
            valid(pod, "V1Pod")
        assert sim.schema.refused == [] and sim.schema.violations == []
