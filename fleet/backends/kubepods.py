"""WebUI pods on Kubernetes: the manifest we create, and what a pod's status means.

Labels and annotations are the durable record of a claim; Redis is rebuilt
from them. Status reading turns Kubernetes' many ways of failing into a
phase and a reason an admin can act on within seconds (kubespawner#795).
"""

from __future__ import annotations

import copy
import datetime
import time
from typing import Any

from ..model import Phase, PodRecord, http_address, record_groups_of
from ..spec import PodSettings, Profile
from .base import TEMPLATE, template_hash

MANAGED_BY = "app.kubernetes.io/managed-by"
PROFILE = "sdbroker.io/profile"
STATE = "sdbroker.io/state"
USER = "sdbroker.io/user"  # label: slug; annotation: the raw identity
TEMPLATE_LABEL = "sdbroker.io/template"  # the hash of the template the pod was made from
CLAIMED_AT = "sdbroker.io/claimed-at"
# Annotation: the claim's groups (model.record_groups, JSON), so a rebuilt claim keeps them.
# Written by the broker only: a WebUI pod has no API token (automountServiceAccountToken
# below); an Agones GameServer's SDK sidecar writes only `agones.dev/sdk-` keys (v1.56.0
# pkg/sdkserver/helper.go, metadataPrefix, used by SetLabel/SetAnnotation). Checked when
# read back all the same (model.record_groups_of).
GROUPS = "sdbroker.io/groups"
# On a claimed pod: the cluster autoscaler never empties its node (scale-down, upgrades).
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SELECTOR = f"{MANAGED_BY}=sdbroker"
PODINFO = "/etc/podinfo"
# The outputs layout of webui-image's pods (its README: the pod contract).
WEBUI_UID = 1000  # the WebUI, which runs its user's code
AGENT_UID = 1001  # the agent, the only owner of the outputs volume: never the WebUI's uid
SHARED_GID = 1000  # both: the agent removes what the WebUI saved (group-writable, umask 002)
AGENT_PORT = 7861
HANDOFF = "/handoff"  # the per-pod folder the WebUI saves into, as the agent sees it
HANDOFF_VOLUME = "handoff"
#: The per-pod folder shared by the WebUI and the agent where A1111's --styles-file and
#: --ui-config-file are (the entrypoint passes them): the agent restores and saves the
#: user's styles.csv and ui-config.json there (fleet/webui_settings.py, the same code).
WEBUI_SETTINGS = "/webui-settings"
WEBUI_SETTINGS_VOLUME = "webui-settings"

#: Container waiting reasons that will not fix themselves.
STUCK = frozenset({"InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff"})
#: Waiting reasons the kubelet retries, often with success (the first pull of a
#: 10-20 GB CUDA image times out; a container runtime hiccups): still starting,
#: as long as the profile's start_timeout allows. ImagePullBackOff is the pause
#: between two pulls (kubelet images/image_manager.go, `EnsureImageExists`).
RETRIED = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "CreateContainerError", "RunContainerError"}
)
#: How container runtimes word a pull that can never succeed (containerd:
#: `code = NotFound ... not found`; registries: `manifest unknown`; docker:
#: `repository does not exist`): failed at once, no use waiting.
IMAGE_MISSING = ("code = NotFound", "manifest unknown", "repository does not exist")
#: Ready=False reasons the kubelet itself writes (status/generate.go,
#: `GeneratePodReadyCondition`). The node controller, when a node stops
#: reporting, flips Ready to False and nothing else (controller/util/node,
#: `MarkPodsNotReady`): the containers still say ready.
KUBELET_NOT_READY = frozenset({"ContainersNotReady", "ReadinessGatesNotReady", "PodCompleted"})


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`: mappings recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_template(
    settings: PodSettings, image: str, *, keep_settings: bool = True
) -> dict[str, Any]:
    """The pod spec shared by plain pods and Agones GameServers, of `image` (required of a
    kubernetes profile, optional of an agones one: fleet/spec/models.py).

    With an outputs volume the pod has two containers (webui-image's pod
    contract): the WebUI, which runs its user's code, saves into a per-pod
    emptyDir mounted where the outputs volume would be (so every path the
    broker gives it stays valid) and never sees the volume; the agent, under
    a uid of its own, is the only one to mount it and moves what the WebUI
    saved into the user's folder. No WebUI can list, read or change anybody's
    images, its own earlier ones included (those are in the broker's gallery).
    """
    resources: dict[str, Any] = copy.deepcopy(dict(settings.resources or {}))
    if settings.gpus:
        limits = dict(resources.get("limits") or {})
        limits["nvidia.com/gpu"] = str(settings.gpus)
        resources["limits"] = limits
    outputs = settings.volumes.outputs
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": settings.port}]
    if settings.readiness_port and not (outputs and settings.readiness_port == AGENT_PORT):
        ports.append({"name": "agent", "containerPort": settings.readiness_port})
    container: dict[str, Any] = {
        "name": "webui",
        "image": image,
        "ports": ports,
        "env": _env(settings.env, {"SDB_ROLE": "webui"} if outputs else {}),
        "resources": resources,
        "volumeMounts": [],
    }
    if settings.command:
        container["command"] = list(settings.command)
    if settings.args:
        container["args"] = list(settings.args)
    podinfo = {"name": "podinfo", "mountPath": PODINFO, "readOnly": True}
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
    containers = [container]
    if outputs is None:
        container["volumeMounts"].insert(0, podinfo)
    else:
        volumes += [
            {"name": "outputs", "persistentVolumeClaim": {"claimName": outputs.claim}},
            # Files stay only until the agent has moved them (a poll, a second).
            {"name": HANDOFF_VOLUME, "emptyDir": {"sizeLimit": "10Gi"}},
        ]
        container["volumeMounts"].append({"name": HANDOFF_VOLUME, "mountPath": outputs.path})
        if keep_settings:  # the entrypoint then starts A1111 with its files in it
            volumes.append({"name": WEBUI_SETTINGS_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}})
            container["volumeMounts"].append(
                {"name": WEBUI_SETTINGS_VOLUME, "mountPath": WEBUI_SETTINGS}
            )
            container["env"].append({"name": "SDB_AGENT_WEBUI_SETTINGS", "value": WEBUI_SETTINGS})
        container["securityContext"] = {
            "runAsUser": WEBUI_UID,
            "runAsGroup": SHARED_GID,
            "runAsNonRoot": True,
            **_locked(),
        }
        containers.append(_agent(settings, image, outputs.path, podinfo, keep_settings))
    spec: dict[str, Any] = {
        "containers": containers,
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


def _locked() -> dict[str, Any]:
    """Fresh each time: a shared object would be written as a YAML alias by `fleet render`."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _env(base: dict[str, str], fixed: dict[str, str]) -> list[dict[str, str]]:
    """The profile's env, then ours; ours wins (it names the mounts and the role)."""
    merged = {k: v for k, v in base.items() if k not in fixed}
    return [{"name": k, "value": v} for k, v in sorted(merged.items())] + [
        {"name": k, "value": v} for k, v in fixed.items()
    ]


def _agent(
    settings: PodSettings, image: str, path: str, podinfo: dict[str, Any], keep_settings: bool
) -> dict[str, Any]:
    """The in-pod agent's container: the same image, the entrypoint's `agent` role.
    It keeps its user's WebUI settings unless the profile says keep_settings: false."""
    fixed = {
        "SDB_ROLE": "agent",
        "SDB_AGENT_PORT": str(AGENT_PORT),
        "SDB_AGENT_OUTPUTS_ROOT": path,
        "SDB_AGENT_HOLDING_DIR": HANDOFF,
        "SDB_AGENT_WEBUI_OUTPUTS": path,
    }
    mounts = [
        {"name": "outputs", "mountPath": path},
        {"name": HANDOFF_VOLUME, "mountPath": HANDOFF},
    ]
    if keep_settings:
        fixed["SDB_AGENT_WEBUI_SETTINGS"] = WEBUI_SETTINGS
        mounts.append({"name": WEBUI_SETTINGS_VOLUME, "mountPath": WEBUI_SETTINGS})
    else:
        fixed["SDB_AGENT_KEEP_SETTINGS"] = "0"
    return {
        "name": "agent",
        "image": image,
        # The profile's env too: it may name the WebUI kind (SDB_AGENT_WEBUI).
        "env": _env(settings.env, fixed),
        "ports": [{"name": "agent", "containerPort": AGENT_PORT}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsUser": AGENT_UID,
            "runAsGroup": SHARED_GID,
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            **_locked(),
        },
        "volumeMounts": [*mounts, podinfo],
    }


def build_pod(profile: Profile, pod_id: str) -> dict[str, Any]:
    """The pod of PROFILE named POD_ID, labelled with the hash of its template."""
    pod = _unlabelled_pod(profile, pod_id)
    pod["metadata"]["labels"][TEMPLATE_LABEL] = template_of(profile)
    return pod


def template_of(profile: Profile) -> str:
    """The hash of the pod PROFILE makes, less what differs per pod (its name and id):
    any change of image, command, env, resources or pod_template changes it."""
    pod = _unlabelled_pod(profile, "")
    pod["metadata"].pop("name", None)
    return template_hash(pod)


def _unlabelled_pod(profile: Profile, pod_id: str) -> dict[str, Any]:
    settings = profile.kubernetes
    assert settings is not None
    spec = pod_template(settings, settings.image, keep_settings=profile.keep_settings)
    # The probe belongs to the container that serves its port (the agent's /ready).
    (probed,) = [c for c in spec["containers"] if _serves(c, settings.readiness_port)] or [
        spec["containers"][0]
    ]
    probed["readinessProbe"] = {
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


def _serves(container: dict[str, Any], port: int | None) -> bool:
    return any(p["containerPort"] == port for p in container.get("ports", []))


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
        if status.get(
            "reason"
        ):  # the pod's own (Evicted, Shutdown...): its containers only died of it
            return Phase.FAILED, f"{status['reason']}: {status.get('message') or ''}".strip(": ")
        for c in containers:
            term = (c.get("state") or {}).get("terminated") or {}
            if term.get("reason"):
                return Phase.FAILED, f"{term['reason']} (exit code {term.get('exitCode')})"
        return Phase.FAILED, f"Failed: {status.get('message') or ''}".strip(": ")
    if phase == "Succeeded":
        return Phase.GONE, "the WebUI exited"
    for c in containers:  # the cause first: an OOM kill shows as CrashLoopBackOff after it
        last = (c.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            return Phase.FAILED, "OOMKilled: the WebUI ran out of memory"
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason"), waiting.get("message") or ""
        if reason in STUCK or (
            reason in RETRIED and any(text in message for text in IMAGE_MISSING)
        ):
            return Phase.FAILED, f"{reason}: {message}".strip(": ")
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
            message = waiting.get("message") or ""
            return Phase.STARTING, f"{waiting['reason']}: {message}".strip(": ")
    return Phase.STARTING, ""


def node_lost_since(status: dict[str, Any]) -> float | None:
    """When the node controller marked this running pod not Ready because its node
    stopped reporting (None: it did not). The kubelet, which would say otherwise, is
    the one that cannot be heard: Ready=False with every container still ready
    and running is written by nobody else."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready") or {}
    containers = status.get("containerStatuses") or []
    if (
        status.get("phase") != "Running"
        or ready.get("status") != "False"
        or ready.get("reason") in KUBELET_NOT_READY
        or not containers
        or not all(c.get("ready") and "running" in (c.get("state") or {}) for c in containers)
    ):
        return None
    return _stamp(ready.get("lastTransitionTime")) or time.time()


def pod_record(
    obj: dict[str, Any],
    port: int,
    *,
    node_lost_grace: float | None = None,
    now: float | None = None,
) -> PodRecord:
    """The record of a pod. One on a lost node reads as starting (it may come back)
    for `node_lost_grace` seconds, then as failed, so that its user is told and
    gets another (None: as starting until the taint eviction deletes it, 5 minutes on)."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    status = obj.get("status") or {}
    node = (obj.get("spec") or {}).get("nodeName") or ""
    phase, reason = read_status(status)
    terminating = bool(meta.get("deletionTimestamp"))
    lost = node_lost_since(status)
    if terminating:
        phase, reason = Phase.GONE, "being deleted"
    elif lost is not None:
        silent = max(0.0, (time.time() if now is None else now) - lost)
        if node_lost_grace is not None and silent >= node_lost_grace:
            phase = Phase.FAILED
            reason = f"node lost: {node} stopped answering {silent:.0f}s ago"
        else:
            reason = f"node lost: {node} not answering for {silent:.0f}s"
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
        groups=record_groups_of(
            annotations.get(GROUPS, "") if labels.get(STATE) == "claimed" else ""
        ),
        node_lost=lost is not None and not terminating,
        extra={
            "namespace": meta.get("namespace", ""),
            "node": node,
            TEMPLATE: labels.get(TEMPLATE_LABEL, ""),
        },
    )


def _stamp(text: str | None) -> float | None:
    """An RFC 3339 time (metav1.Time: `2025-01-01T00:00:00Z`) in unix seconds."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
