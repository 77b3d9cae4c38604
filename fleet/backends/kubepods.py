"""WebUI pods on Kubernetes: the manifest we create, and what a pod's status means.

Labels and annotations are the durable record of a claim; Redis is rebuilt
from them. Status reading turns Kubernetes' many ways of failing into a
phase and a reason an admin can act on within seconds (kubespawner#795).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from ..model import Phase, PodRecord, http_address
from ..spec import PodSettings, Profile

MANAGED_BY = "app.kubernetes.io/managed-by"
PROFILE = "sdbroker.io/profile"
STATE = "sdbroker.io/state"
USER = "sdbroker.io/user"  # label: slug; annotation: the raw identity
CLAIMED_AT = "sdbroker.io/claimed-at"
SELECTOR = f"{MANAGED_BY}=sdbroker"
PODINFO = "/etc/podinfo"

#: Container waiting reasons that will not fix themselves.
STUCK = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`: mappings recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_template(settings: PodSettings) -> dict[str, Any]:
    """The pod spec shared by plain pods and Agones GameServers."""
    resources = copy.deepcopy(dict(settings.resources or {}))
    if settings.gpus:
        limits = dict(resources.get("limits") or {})
        limits["nvidia.com/gpu"] = str(settings.gpus)
        resources["limits"] = limits
    container: dict[str, Any] = {
        "name": "webui",
        "image": settings.image,
        "ports": [{"name": "http", "containerPort": settings.port}]
        + (
            [{"name": "agent", "containerPort": settings.readiness_port}]
            if settings.readiness_port
            else []
        ),
        "env": [{"name": k, "value": v} for k, v in sorted(settings.env.items())],
        "resources": resources,
        "volumeMounts": [{"name": "podinfo", "mountPath": PODINFO, "readOnly": True}],
    }
    if settings.command:
        container["command"] = list(settings.command)
    if settings.args:
        container["args"] = list(settings.args)
    volumes: list[dict[str, Any]] = [
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        }
    ]
    vols = settings.volumes
    if vols.models is not None:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {
                    "claimName": vols.models.claim,
                    "readOnly": vols.models.read_only,
                },
            }
        )
        container["volumeMounts"].append(
            {"name": "models", "mountPath": vols.models.path, "readOnly": vols.models.read_only}
        )
    if vols.outputs is not None:
        volumes.append(
            {"name": "outputs", "persistentVolumeClaim": {"claimName": vols.outputs.claim}}
        )
        container["volumeMounts"].append({"name": "outputs", "mountPath": vols.outputs.path})
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,  # a WebUI runs user code: no API credentials
        "enableServiceLinks": False,
    }
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = copy.deepcopy(list(settings.tolerations))
    if settings.priority_class:
        spec["priorityClassName"] = settings.priority_class
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return spec


def build_pod(profile: Profile, pod_id: str) -> dict[str, Any]:
    settings = profile.kubernetes
    assert settings is not None
    spec = pod_template(settings)
    spec["containers"][0]["readinessProbe"] = {
        "httpGet": {
            "path": settings.readiness_path,
            "port": settings.readiness_port or settings.port,
        },
        "periodSeconds": 2,
        "failureThreshold": 2,
    }
    spec["containers"][0]["env"].append({"name": "SDB_POD_ID", "value": pod_id})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_id,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY: "sdbroker", PROFILE: profile.name, STATE: "warming"},
            "annotations": {},
        },
        "spec": spec,
    }
    return deep_merge(pod, dict(settings.pod_template or {}))


def _created(meta: dict[str, Any]) -> float:
    stamp = meta.get("creationTimestamp")
    if not stamp:
        return time.time()
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return time.time()


def read_status(status: dict[str, Any]) -> tuple[Phase, str]:
    """(phase, reason) of a pod status, reasons worded the way kubectl shows them."""
    phase = status.get("phase", "Pending")
    containers = status.get("containerStatuses") or []
    if phase == "Failed":
        for c in containers:
            term = (c.get("state") or {}).get("terminated") or {}
            if term.get("reason"):
                return Phase.FAILED, f"{term['reason']} (exit code {term.get('exitCode')})"
        return (
            Phase.FAILED,
            f"{status.get('reason') or 'Failed'}: {status.get('message') or ''}".strip(": "),
        )
    if phase == "Succeeded":
        return Phase.GONE, "the WebUI exited"
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK:
            return Phase.FAILED, f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": ")
        last = (c.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            return Phase.FAILED, "OOMKilled: the WebUI ran out of memory"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False":
        return (
            Phase.STARTING,
            f"{scheduled.get('reason') or 'Pending'}: {scheduled.get('message') or ''}".strip(": "),
        )
    if conditions.get("Ready", {}).get("status") == "True":
        return Phase.READY, ""
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return Phase.STARTING, waiting["reason"]
    return Phase.STARTING, ""


def pod_record(obj: dict[str, Any], port: int) -> PodRecord:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    status = obj.get("status") or {}
    phase, reason = read_status(status)
    terminating = bool(meta.get("deletionTimestamp"))
    if terminating:
        phase, reason = Phase.GONE, "being deleted"
    ip = status.get("podIP")
    claimed_at = annotations.get(CLAIMED_AT, "")
    return PodRecord(
        id=meta.get("name", ""),
        profile=labels.get(PROFILE, ""),
        phase=phase,
        addr=http_address(ip, port) if ip else "",
        user=annotations.get(USER, "") if labels.get(STATE) == "claimed" else "",
        created=_created(meta),
        claimed_at=float(claimed_at) if claimed_at.replace(".", "", 1).isdigit() else 0.0,
        reason=reason,
        terminating=terminating,
        extra={
            "namespace": meta.get("namespace", ""),
            "node": (obj.get("spec") or {}).get("nodeName") or "",
        },
    )
