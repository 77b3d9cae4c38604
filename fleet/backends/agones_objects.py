"""Reading and writing Agones objects for the `agones` backend: no I/O here.

How Agones v1.56.0 fills a GameServer's status decides how the broker reaches
a WebUI. `status.address` is the NODE's address (ExternalDNS, ExternalIP,
InternalDNS, InternalIP, in that order: `pkg/gameservers/gameservers.go`,
`address()` / `applyGameServerAddressAndPort`); the pod's own IPs are only in
`status.addresses`, as entries of type `PodIP`. Our Fleet's port has
`portPolicy: None` (no hostPort: the namespace's Pod Security "baseline"
forbids them, and the broker reaches pods directly), so nothing listens on
the node: the WebUI is at the pod IP and its containerPort.
"""

from __future__ import annotations

import time
from typing import Any

from ..model import Phase, http_address
from ..slug import slugify
from .kubepods import CLAIMED_AT, GROUPS, STATE, USER

FLEET_LABEL = "agones.dev/fleet"
POD_IP = "PodIP"  # agonesv1.NodePodIP
DEAD = {"Unhealthy", "Error"}


def allocation_body(fleet: str, user: str, slug: str, groups: str = "") -> dict[str, Any]:
    """A GameServerAllocation that returns the user's GameServer if they have one; its
    metadata (user, claim time, groups: model.record_groups) is the claim's record."""
    return {
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "spec": {
            "selectors": [
                {"matchLabels": {FLEET_LABEL: fleet, USER: slug}, "gameServerState": "Allocated"},
                # Never a GameServer that was ever someone's (SDK Ready() from inside
                # the pod puts an Allocated one back to Ready with its labels).
                {
                    "matchLabels": {FLEET_LABEL: fleet},
                    "matchExpressions": [{"key": USER, "operator": "DoesNotExist"}],
                    "gameServerState": "Ready",
                },
            ],
            "metadata": {
                "labels": {USER: slug, STATE: "claimed"},
                "annotations": {USER: user, CLAIMED_AT: f"{time.time():.3f}", GROUPS: groups},
            },
        },
    }


def pod_ip(status: dict[str, Any]) -> str:
    """The first `PodIP` of `status.addresses` (a dual-stack pod's primary IP comes first,
    as in `pod.status.podIPs`); "" while Agones has written none."""
    for entry in status.get("addresses") or []:
        if entry.get("type") == POD_IP and entry.get("address"):
            return str(entry["address"])
    return ""


def webui_address(status: dict[str, Any], port: int) -> str:
    """The WebUI's base URL: pod IP and containerPort (IPv6 in brackets), or ""."""
    ip = pod_ip(status)
    return http_address(ip, port) if ip else ""


def gameserver_phase(gs: dict[str, Any]) -> tuple[Phase, str]:
    meta = gs.get("metadata", {})
    status = gs.get("status") or {}
    state = str(status.get("state") or "Creating")
    if meta.get("deletionTimestamp") or state == "Shutdown":
        return Phase.GONE, "being deleted"
    label = (meta.get("labels") or {}).get(USER)
    if label and state != "Allocated":
        # Only an allocation labels a GameServer, and only its own pod (SDK Ready()
        # or Reserve()) takes it out of Allocated: its user's code did. Never reused.
        return Phase.FAILED, f"GameServer claimed by {label} left Allocated (now {state})"
    if label and label != slugify((meta.get("annotations") or {}).get(USER, "")):
        return Phase.FAILED, f"GameServer user label {label} disagrees with its annotation"
    if state in ("Ready", "Allocated"):
        if not pod_ip(status):
            # Agones writes the addresses once: at Scheduled (after the pod has IPs) or, if
            # SDK Ready() came first, at RequestReady without waiting for them
            # (controller.go, syncGameServerRequestReadyState). Nobody can reach this one.
            return Phase.FAILED, f"GameServer {state} without a PodIP in status.addresses"
        return Phase.READY, ""
    if state in DEAD:
        return Phase.FAILED, f"GameServer {state}"
    return Phase.STARTING, state


def allocated_to(gs: dict[str, Any], user: str, slug: str) -> bool:
    """Allocated, and its label and annotation both name this user (as the allocation wrote)."""
    meta = gs.get("metadata", {})
    return (
        (gs.get("status") or {}).get("state") == "Allocated"
        and (meta.get("labels") or {}).get(USER) == slug
        and (meta.get("annotations") or {}).get(USER) == user
    )


def free_ready(gameservers: Any, fleet: str) -> int:
    """How many GameServers the allocation's Ready selector would take (the watch's view)."""
    return sum(
        1
        for gs in gameservers
        if (gs.get("status") or {}).get("state") == "Ready"
        and not gs["metadata"].get("deletionTimestamp")
        and (gs["metadata"].get("labels") or {}).get(FLEET_LABEL) == fleet
        and USER not in (gs["metadata"].get("labels") or {})
    )


def merged_allocation(current: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The watch's copy of a GameServer with what an Allocated answer says was written."""
    meta = status.get("metadata") or {}
    return {
        **current,
        "metadata": {
            **current["metadata"],
            "labels": {**(current["metadata"].get("labels") or {}), **meta.get("labels", {})},
            "annotations": {
                **(current["metadata"].get("annotations") or {}),
                **meta.get("annotations", {}),
            },
        },
        "status": {
            **(current.get("status") or {}),
            # The answer carries the GameServer's addresses too, if the watch lags them.
            **{
                k: status[k] for k in ("address", "addresses", "nodeName", "ports") if status.get(k)
            },
            "state": "Allocated",
        },
    }
