"""What a WebUI container can reach of the shared outputs volume, in the manifests: nothing.

A WebUI runs its user's code. The pods the broker creates (kubernetes
backend, from the fleet file in each overlay) and the Agones Fleet
(ingress/overlays/agones) give the outputs volume only to the in-pod agent,
under a uid that is neither root nor the WebUI's; the WebUI saves into a
per-pod emptyDir the agent empties. The broker mounts the volume read-only,
at the path its backends name (``/outputs/<slug>``), for each user's gallery.
"""

from __future__ import annotations

import pytest
import yaml

from fleet import parse_spec
from fleet.backends.kubepods import build_pod
from tests.test_manifests import TARGETS, containers_of, pod_spec, rendered, the

WEBUI_UID = 1000


def pvc_volumes(pod: dict, claim: str) -> set[str]:
    return {
        v["name"]
        for v in pod["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }


def who_mounts(pod: dict, names: set[str]) -> dict[str, dict]:
    """Container name -> its mount of any of ``names``."""
    return {
        c["name"]: m
        for c in pod.get("initContainers", []) + pod["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in names
    }


def uid_of(pod: dict, container: dict) -> int | None:
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}.get(
        "runAsUser"
    )


def check_webui_pod(pod: dict, webui_name: str = "webui") -> None:
    outputs = pvc_volumes(pod, "sd-outputs")
    assert outputs, "no outputs volume in the pod"
    holders = who_mounts(pod, outputs)
    assert webui_name not in holders, f"the WebUI container mounts the outputs: {holders}"
    containers = {c["name"]: c for c in pod["containers"]}
    for name in holders:
        assert uid_of(pod, containers[name]) not in (None, 0, WEBUI_UID), name
    # What the WebUI saves goes to a pod-local emptyDir, shared with that agent.
    webui = containers[webui_name]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (handoff,) = [m for m in webui["volumeMounts"] if m["mountPath"] == "/outputs"]
    assert "emptyDir" in volumes[handoff["name"]]
    assert set(who_mounts(pod, {handoff["name"]})) == {webui_name, *holders}
    # Nothing else of the pod's volumes is a network share the WebUI could write.
    for mount in webui["volumeMounts"]:
        if "persistentVolumeClaim" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, mount


@pytest.mark.parametrize("target", TARGETS)
def test_the_broker_reads_the_outputs_for_the_gallery_only(target: str) -> None:
    pod = pod_spec(the(rendered(target), "Deployment", "sdbroker"))
    names = pvc_volumes(pod, "sd-outputs")
    (volume,) = [v for v in pod["volumes"] if v["name"] in names]
    assert volume["persistentVolumeClaim"].get("readOnly") is True
    (mount,) = who_mounts(pod, names).values()
    assert mount["mountPath"] == "/outputs" and mount["readOnly"] is True


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "agones"])
def test_plain_webui_pods_give_the_outputs_to_the_agent_alone(target: str) -> None:
    text = the(rendered(target), "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"]
    spec = parse_spec(text)
    assert yaml.safe_load(text)["backend"] == "kubernetes"
    for profile in spec.profiles:
        check_webui_pod(build_pod(profile, f"{profile.name}-x")["spec"])


def test_agones_webui_pods_give_the_outputs_to_the_agent_alone() -> None:
    fleets = [d for d in rendered("agones") if d["kind"] == "Fleet"]
    assert fleets
    for fleet in fleets:
        gameserver = fleet["spec"]["template"]["spec"]
        pod = pod_spec(fleet)
        check_webui_pod(pod, gameserver["container"])
        assert {c["name"] for c in containers_of(fleet)} == {gameserver["container"], "agent"}
