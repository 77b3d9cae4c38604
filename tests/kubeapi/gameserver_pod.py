"""The Pod of a GameServer, with the metadata Agones v1.56.0 gives it.

Ported from agones v1.56.0 `pkg/apis/agones/v1/gameserver.go`, `(*GameServer).Pod`
and `podObjectMeta`, with the generic cloud product's `SetEviction`
(`pkg/cloudproduct/eviction/eviction.go`) and the eviction default of
`applyEvictionDefaults` / `applyEvictionStatus` (gameserver.go). The pod's
labels and annotations are the GameServer's POD template's
(`spec.template.metadata`; a Fleet's `spec.template.spec.template.metadata`)
plus what Agones adds; the GameServer's own labels and annotations
(`agones.dev/fleet`, an allocation's metadata, the Fleet template's
`metadata`) never reach the pod. A NetworkPolicy must select pod-template
labels: the simulator used to copy the GameServer's labels onto the pod,
which hid a Fleet whose WebUI pods no policy selected.
"""

from __future__ import annotations

from typing import Any

from .gameserver_address import gameserver_pod_ports
from .store import clone

AGONES_VERSION = "1.56.0"  # pkg.Version, written as the sdk-version annotation
ROLE_LABEL = "agones.dev/role"  # RoleLabel = GameServerLabelRole
GAMESERVER_POD_LABEL = "agones.dev/gameserver"  # GameServerPodLabel
CONTAINER_ANNOTATION = "agones.dev/container"  # GameServerContainerAnnotation
VERSION_ANNOTATION = "agones.dev/sdk-version"  # VersionAnnotation (register.go)
SAFE_TO_EVICT_LABEL = "agones.dev/safe-to-evict"  # SafeToEvictLabel
POD_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"  # PodSafeToEvictAnnotation
SDK_GRPC_PORT_ENV = "AGONES_SDK_GRPC_PORT"  # pkg/gameservers/controller.go grpcPortEnvVar
SDK_HTTP_PORT_ENV = "AGONES_SDK_HTTP_PORT"  # httpPortEnvVar
#: `applySdkServerDefaults` (gameserver.go): what the mutating webhook fills in.
SDK_SERVER_DEFAULTS = {"logLevel": "Info", "grpcPort": 9357, "httpPort": 9358}


def eviction_safe(gs: dict[str, Any]) -> str:
    """`status.eviction.safe` as Agones' defaulting sets it: spec's, default Never;
    Always when the pod template is annotated safe-to-evict "true"."""
    spec = gs.get("spec") or {}
    template_notes = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if template_notes.get(POD_SAFE_TO_EVICT) == "true":
        return "Always"
    return str((spec.get("eviction") or {}).get("safe") or "Never")


def gameserver_pod(gs: dict[str, Any]) -> dict[str, Any]:
    """The Pod Agones creates for `gs`: its metadata and container ports as Agones makes them."""
    meta, spec = gs["metadata"], gs["spec"]
    template = clone(spec.get("template") or {})
    pod_meta: dict[str, Any] = dict(template.get("metadata") or {})  # Spec.Template.ObjectMeta
    pod_spec: dict[str, Any] = template.get("spec") or {}
    if not pod_spec.get("hostname"):
        pod_spec["hostname"] = meta["name"].replace(".", "-")

    # podObjectMeta
    for key in ("generateName", "resourceVersion", "uid"):
        pod_meta.pop(key, None)
    pod_meta["name"], pod_meta["namespace"] = meta["name"], meta["namespace"]
    labels = pod_meta["labels"] = dict(pod_meta.get("labels") or {})
    notes = pod_meta["annotations"] = dict(pod_meta.get("annotations") or {})
    labels[ROLE_LABEL] = "gameserver"
    labels[GAMESERVER_POD_LABEL] = meta["name"]
    notes[CONTAINER_ANNOTATION] = spec.get("container", "")
    pod_meta["ownerReferences"] = [
        *(pod_meta.get("ownerReferences") or []),
        {
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        },
    ]
    notes[VERSION_ANNOTATION] = AGONES_VERSION

    # SetEviction: only where the template did not say it already.
    safe = eviction_safe(gs)
    notes.setdefault(POD_SAFE_TO_EVICT, "true" if safe == "Always" else "false")
    labels.setdefault(SAFE_TO_EVICT_LABEL, "false" if safe == "Never" else "true")

    # Pod(): each GameServer port is APPENDED to its container's ports (no name; a hostPort
    # only when the policy is not None). The process listens on the container's first
    # containerPort at the pod IP (podspec.serve_port), as a real one does; a hostPort is
    # the node's, which nothing here forwards.
    appended = gameserver_pod_ports(spec)
    for container in pod_spec.get("containers") or []:
        extra = appended.get(container.get("name", ""))
        if extra:
            container["ports"] = [*(container.get("ports") or []), *extra]
    add_sdk_env(spec, pod_spec)
    return {"metadata": pod_meta, "spec": pod_spec}


def add_sdk_env(spec: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    """Where the SDK sidecar listens, in every container's env (the in-pod agent reads it to
    know it runs under Agones): agones v1.56.0 `pkg/gameservers/controller.go`,
    `addSDKServerEnvVars` / `addEnvVarsToContainer` / `sdkEnvironmentVariables`, which
    replace any value the template set for these two names."""
    sdk = {**SDK_SERVER_DEFAULTS, **(spec.get("sdkServer") or {})}
    added = [
        {"name": SDK_GRPC_PORT_ENV, "value": str(sdk["grpcPort"])},
        {"name": SDK_HTTP_PORT_ENV, "value": str(sdk["httpPort"])},
    ]
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            kept = [
                e
                for e in container.get("env") or []
                if e.get("name") not in (SDK_GRPC_PORT_ENV, SDK_HTTP_PORT_ENV)
            ]
            container["env"] = [*kept, *(dict(e) for e in added)]
