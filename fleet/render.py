"""`sdbroker fleet render`: the Agones Fleet of each agones profile.

Only the Fleet: no FleetAutoscaler, and no `spec.replicas` in the Fleet. The
broker alone sizes the Fleet (fleet/backends/agones.py): a FleetAutoscaler's
Buffer policy would set the replicas back to allocated + bufferSize on every
sync (agones v1.56.0 `applyBufferPolicy`) and delete the GameServers started
for people waiting in line, and a `replicas:` in the applied Fleet would
reset the size on every `kubectl apply`. So `buffer: 0` (scale to zero) works
on Agones as anywhere else.
"""

from __future__ import annotations

import copy
from typing import Any

from .backends.base import template_hash
from .backends.kubepods import MANAGED_BY, PROFILE, TEMPLATE_LABEL, deep_merge, pod_template
from .spec import AgonesProfile, FleetSpec, Profile

WEBUI_NAME = "sdbroker-webui"


class RenderError(ValueError):
    """The profile cannot be expressed as an Agones Fleet."""


def render_profile(profile: Profile) -> list[dict[str, Any]]:
    block = profile.agones
    if block is None:
        raise RenderError(f"profile {profile.name} has no agones: block")
    if not block.image:
        raise RenderError(f"profile {profile.name}: agones.image is required to render a Fleet")
    labels = {MANAGED_BY: "sdbroker", "app.kubernetes.io/name": WEBUI_NAME, PROFILE: profile.name}
    pod = _pod_template(profile.name, block, block.image, labels, profile.keep_settings)
    fleet: dict[str, Any] = {
        "apiVersion": "agones.dev/v1",
        "kind": "Fleet",
        "metadata": {"name": block.fleet, "namespace": block.namespace, "labels": dict(labels)},
        # No replicas: the broker sets them (and a re-apply must not reset them).
        "spec": {
            "scheduling": "Packed",
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(labels)},  # + the template's hash, below
                "spec": {
                    "container": "webui",
                    "ports": [
                        {
                            "name": "webui",
                            "portPolicy": "None",
                            "containerPort": block.port,
                            "protocol": "TCP",
                        }
                    ],
                    "health": {
                        "initialDelaySeconds": 300,
                        "periodSeconds": 10,
                        "failureThreshold": 6,
                    },
                    "eviction": {"safe": "Never"},
                    "template": pod,
                },
            },
        },
    }
    # Every GameServer (and its pod) says which template it was made from, as plain pods
    # do (kubepods.TEMPLATE_LABEL). Agones itself replaces the Ready ones of an old
    # template: a changed template is a new GameServerSet, rolled by `strategy` above
    # (agones v1.56 pkg/fleets/controller.go, `rollingUpdateDeployment`).
    gameserver = fleet["spec"]["template"]
    gameserver["metadata"]["labels"][TEMPLATE_LABEL] = template_hash(gameserver["spec"])
    return [fleet]


def _pod(block: AgonesProfile, image: str, keep_settings: bool = True) -> dict[str, Any]:
    pod = pod_template(block, image, keep_settings=keep_settings)
    # The Agones SDK sidecar needs the service account token; Agones keeps it
    # from the WebUI container itself.
    pod.pop("automountServiceAccountToken", None)
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    webui = pod["containers"][0]
    # On top of what pod_template set (its uid and group beside the agent's).
    webui["securityContext"] = {
        **webui.get("securityContext", {}),
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for name, path, source in (
        ("data", "/data", {"emptyDir": {"sizeLimit": "20Gi"}}),
        ("tmp", "/tmp", {"emptyDir": {"sizeLimit": "10Gi"}}),
        ("dshm", "/dev/shm", {"emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}),
    ):
        webui["volumeMounts"].append({"name": name, "mountPath": path})
        pod["volumes"].append({"name": name, **source})
    if not webui["env"]:
        del webui["env"]
    return pod


def _pod_template(
    name: str, block: AgonesProfile, image: str, labels: dict[str, str], keep_settings: bool = True
) -> dict[str, Any]:
    """The GameServer's pod template, with the labels the NetworkPolicies select.

    Agones makes a GameServer's pod metadata from this template alone, plus
    agones.dev/role and agones.dev/gameserver (agones v1.56.0
    pkg/apis/agones/v1/gameserver.go, `Pod()` / `podObjectMeta`): labels on the
    GameServer template never reach the pod, and a WebUI no policy selects may
    reach anything. `pod_template` holds raw pod fields, as for the kubernetes
    backend (merged into the whole Pod there), so it is merged into the whole
    pod template here; anything beside metadata and spec is refused, not dropped.
    """
    extra = dict(block.pod_template or {})
    stray = sorted(set(extra) - {"metadata", "spec"})
    if stray:
        raise RenderError(
            f"profile {name}: agones.pod_template holds raw pod fields (metadata:, spec:); "
            f"move {', '.join(stray)} under spec: or metadata:"
        )
    template = {"metadata": {"labels": dict(labels)}, "spec": _pod(block, image, keep_settings)}
    return deep_merge(template, copy.deepcopy(extra))


def render(spec: FleetSpec) -> list[dict[str, Any]]:
    if spec.backend != "agones":
        raise RenderError(
            f"render makes Agones objects; this fleet uses the {spec.backend} backend"
        )
    problems: list[str] = []
    docs: list[dict[str, Any]] = []
    for profile in spec.profiles:
        try:
            docs += render_profile(profile)
        except RenderError as exc:
            problems.append(str(exc))
    if problems:
        raise RenderError("\n".join(problems))
    return docs
