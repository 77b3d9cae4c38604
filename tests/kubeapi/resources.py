"""The kinds this API server serves, and what discovery says about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_RW = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = _RW
    status_subresource: bool = False
    scale_subresource: bool = False
    field_labels: tuple[str, ...] = _META_FIELDS
    short_names: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def discovery(self) -> list[dict[str, Any]]:
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(self.verbs),
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
            }
        ]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.scale_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


NAMESPACES = Resource(
    "",
    "v1",
    "namespaces",
    "Namespace",
    namespaced=False,
    status_subresource=True,
    field_labels=("metadata.name", "status.phase"),
    short_names=("ns",),
)
NODES = Resource(
    "",
    "v1",
    "nodes",
    "Node",
    namespaced=False,
    status_subresource=True,
    verbs=("get", "list", "patch", "watch"),
    field_labels=("metadata.name", "spec.unschedulable"),
    short_names=("no",),
)
PODS = Resource(
    "",
    "v1",
    "pods",
    "Pod",
    status_subresource=True,
    short_names=("po",),
    field_labels=_META_FIELDS
    + (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
)
EVENTS = Resource(
    "",
    "v1",
    "events",
    "Event",
    short_names=("ev",),
    field_labels=_META_FIELDS
    + (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
)
GAMESERVERS = Resource("agones.dev", "v1", "gameservers", "GameServer", short_names=("gs",))
FLEETS = Resource(
    "agones.dev",
    "v1",
    "fleets",
    "Fleet",
    status_subresource=True,
    scale_subresource=True,
    short_names=("flt",),
)
FLEETAUTOSCALERS = Resource(
    "autoscaling.agones.dev",
    "v1",
    "fleetautoscalers",
    "FleetAutoscaler",
    status_subresource=True,
    short_names=("fas",),
)
GAMESERVERALLOCATIONS = Resource(
    "allocation.agones.dev",
    "v1",
    "gameserverallocations",
    "GameServerAllocation",
    verbs=("create",),
    short_names=("gsa",),
)

CORE = (NAMESPACES, NODES, PODS, EVENTS)
AGONES = (GAMESERVERS, FLEETS, FLEETAUTOSCALERS, GAMESERVERALLOCATIONS)
ALL = CORE + AGONES


def by_path(group: str, version: str, plural: str) -> Resource | None:
    for res in ALL:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None
