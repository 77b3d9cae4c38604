"""Pod specs: the defaults the apiserver fills in on create, and what the simulator reads from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .podstatus import PodSim


def default_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """Validate a pod on create and fill in the apiserver's defaults; status starts Pending."""
    spec = pod.setdefault("spec", {})
    name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get(
        "generateName", ""
    )
    containers = spec.get("containers") or []
    if not containers:
        raise errors.invalid("Pod", name, "spec.containers: Required value")
    for i, container in enumerate(containers):
        if not container.get("name"):
            raise errors.invalid("Pod", name, f"spec.containers[{i}].name: Required value")
        if not container.get("image"):
            raise errors.invalid("Pod", name, f"spec.containers[{i}].image: Required value")
        latest = ":" not in container["image"].split("/")[-1] or container["image"].endswith(
            ":latest"
        )
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("securityContext", {})
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault(
        "tolerations",
        [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    )
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    return pod


def serve_port(pod: dict[str, Any]) -> int:
    """Where the pod's process listens at its pod IP: the first containerPort, else the probe's
    port. A hostPort is the node's (the kubelet forwards it), never where the process listens."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            return int(port.get("containerPort") or port.get("hostPort") or 0)
        probe_port = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("port")
        if isinstance(probe_port, int):
            return probe_port
    return 8080


def probe_path(pod: dict[str, Any]) -> str:
    for container in (pod.get("spec") or {}).get("containers") or []:
        path = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        if path:
            return str(path)
    return "/"


def process_env(pod: dict[str, Any], p: PodSim) -> dict[str, str]:
    """Plain env values of the first container, and the downward-API fields we know."""
    fields = {
        "metadata.name": p.name,
        "metadata.namespace": p.namespace,
        "metadata.uid": p.uid,
        "status.podIP": p.ip or "",
        "spec.nodeName": p.node or "",
        "status.hostIP": p.host_ip or "",
    }
    env: dict[str, str] = {}
    for container in ((pod.get("spec") or {}).get("containers") or [])[:1]:
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif path := ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath"):
                env[var["name"]] = fields.get(path, "")
    return env


def first_image(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def container_name(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or [{}]
    return str(containers[0].get("name", ""))


def qos_class(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        {"cpu", "memory"} <= set(r.get("limits") or {})
        and all(
            (r.get("requests") or {}).get(k, v) == v for k, v in (r.get("limits") or {}).items()
        )
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"
