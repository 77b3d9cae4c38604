"""The WebUI pod manifest and the reading of pod status (no cluster needed)."""

from __future__ import annotations

from fleet import Phase, parse_spec
from fleet.backends.kubepods import build_pod, read_status, template_of

SPEC = """\
backend: kubernetes
profiles:
  - name: l4
    max: 2
    kubernetes:
      image: example/webui:1
      readiness_path: /ready
      readiness_port: 7861
      node_selector: {gpu: l4}
      pod_template: {spec: {terminationGracePeriodSeconds: 5}}
"""


def test_pod_carries_labels_gpu_probe_and_template() -> None:
    pod = build_pod(parse_spec(SPEC).profile("l4"), "l4-abc")
    labels = pod["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/managed-by": "sdbroker",
        "sdbroker.io/profile": "l4",
        "sdbroker.io/state": "warming",
        "sdbroker.io/template": template_of(parse_spec(SPEC).profile("l4")),
    }
    webui, agent = pod["spec"]["containers"]
    assert webui["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # The probe is on the container serving its port: the agent's /ready.
    assert agent["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 7861}
    assert {"name": "agent", "containerPort": 7861} in agent["ports"]
    assert "readinessProbe" not in webui
    assert {"name": "SDB_POD_ID", "value": "l4-abc"} in webui["env"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["nodeSelector"] == {"gpu": "l4"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 5  # pod_template merged last
    mounts = {m["mountPath"] for m in webui["volumeMounts"]}
    assert {"/models", "/outputs"} <= mounts


def test_template_hash_is_the_same_for_every_pod_and_changes_with_the_template() -> None:
    """The controller retires Ready pods whose hash differs from the profile's: one per pod
    name would retire every pod, one blind to the image or pod_template would retire none."""
    profile = parse_spec(SPEC).profile("l4")
    first, second = build_pod(profile, "l4-abc"), build_pod(profile, "l4-def")
    label = "sdbroker.io/template"
    assert first["metadata"]["labels"][label] == second["metadata"]["labels"][label]
    assert len(template_of(profile)) == 16  # a valid label value (63 characters at most)
    for change in (("example/webui:1", "example/webui:2"), ("Seconds: 5", "Seconds: 6")):
        other = parse_spec(SPEC.replace(*change)).profile("l4")
        assert template_of(other) != template_of(profile), change


def mounts_of(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_only_the_agent_mounts_the_outputs_volume_under_its_own_uid() -> None:
    """A WebUI runs its user's code: it gets a per-pod folder, never the shared volume."""
    pod = build_pod(parse_spec(SPEC).profile("l4"), "l4-abc")
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    webui, agent = spec["containers"]
    claimed_by = {
        c["name"]
        for c in spec["containers"]
        for m in c["volumeMounts"]
        if "persistentVolumeClaim" in volumes[m["name"]]
        and volumes[m["name"]]["persistentVolumeClaim"]["claimName"] == "sd-outputs"
    }
    assert claimed_by == {"agent"}
    # The WebUI saves where the broker says (/outputs/<slug>): an emptyDir of this pod...
    handoff = mounts_of(webui)["handoff"]
    assert handoff["mountPath"] == "/outputs" and "emptyDir" in volumes["handoff"]
    # ...which the agent also mounts, beside the volume it moves the files onto.
    assert mounts_of(agent)["handoff"]["mountPath"] == "/handoff"
    assert mounts_of(agent)["outputs"]["mountPath"] == "/outputs"
    assert "podinfo" not in mounts_of(webui) and "podinfo" in mounts_of(agent)
    # Two uids: nothing the WebUI runs is ever the owner of the outputs.
    webui_sc, agent_sc = webui["securityContext"], agent["securityContext"]
    assert webui_sc["runAsUser"] == 1000 and agent_sc["runAsUser"] not in (0, 1000)
    assert webui_sc["runAsGroup"] == agent_sc["runAsGroup"]  # the agent removes what it moved
    for sc in (webui_sc, agent_sc):
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    assert agent_sc["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in agent["env"]}
    assert env["SDB_ROLE"] == "agent" and {"name": "SDB_ROLE", "value": "webui"} in webui["env"]
    assert (env["SDB_AGENT_HOLDING_DIR"], env["SDB_AGENT_WEBUI_OUTPUTS"]) == (
        "/handoff",
        "/outputs",
    )
    assert env["SDB_AGENT_OUTPUTS_ROOT"] == "/outputs"
    assert agent["image"] == webui["image"]  # webui-image carries the agent


def test_without_an_outputs_volume_the_pod_is_one_container() -> None:
    text = SPEC.replace(
        "      node_selector", "      volumes: {outputs: null}\n      node_selector"
    )
    pod = build_pod(parse_spec(text).profile("l4"), "l4-abc")
    (webui,) = pod["spec"]["containers"]
    assert webui["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 7861}
    assert {"name": "agent", "containerPort": 7861} in webui["ports"]
    assert set(mounts_of(webui)) == {"podinfo", "models"}
    assert "SDB_ROLE" not in {e["name"] for e in webui["env"]}


def test_status_reasons_are_reported_the_way_kubectl_shows_them() -> None:
    waiting = {
        "phase": "Pending",
        "containerStatuses": [
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}}
        ],
    }
    # The kubelet pulls again after the back-off: still starting (tests/backends/fixtures).
    assert read_status(waiting) == (Phase.STARTING, "ImagePullBackOff: Back-off pulling")
    oom = {
        "phase": "Running",
        "containerStatuses": [
            {"state": {"running": {}}, "lastState": {"terminated": {"reason": "OOMKilled"}}}
        ],
    }
    assert read_status(oom)[0] is Phase.FAILED
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}
    assert read_status(evicted) == (Phase.FAILED, "Evicted: low on memory")
    pending = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available",
            }
        ],
    }
    assert read_status(pending) == (Phase.STARTING, "Unschedulable: 0/1 nodes are available")
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert read_status(ready) == (Phase.READY, "")
