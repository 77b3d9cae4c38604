"""The WebUI pod manifest and the reading of pod status (no cluster needed)."""

from __future__ import annotations

from fleet import Phase, parse_spec
from fleet.backends.kubepods import build_pod, read_status

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
    }
    (webui,) = pod["spec"]["containers"]
    assert webui["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert webui["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 7861}
    assert {"name": "agent", "containerPort": 7861} in webui["ports"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["nodeSelector"] == {"gpu": "l4"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == 5  # pod_template merged last
    mounts = {m["mountPath"] for m in webui["volumeMounts"]}
    assert {"/models", "/outputs", "/etc/podinfo"} <= mounts


def test_status_reasons_are_reported_the_way_kubectl_shows_them() -> None:
    waiting = {
        "phase": "Pending",
        "containerStatuses": [
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
        ],
    }
    assert read_status(waiting) == (Phase.FAILED, "ImagePullBackOff: no such image")
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
