"""The schema of a GameServerAllocation, which Agones publishes nowhere: derived from its Go types.

GameServerAllocation is no custom resource (Agones' own aggregated API
server serves `allocation.agones.dev/v1`, and its `/openapi/v3` is empty:
agones v1.56.0 `pkg/util/apiserver/apiserver.go`), so there is no CRD
schema. This one follows agones v1.56.0 `pkg/apis/allocation/v1/
gameserverallocation.go` (`GameServerAllocation`, `GameServerAllocationSpec`,
`GameServerSelector`, `MetaPatch`, `GameServerAllocationStatus`) and the
types it uses (`pkg/apis/agones/v1/common.go` `Priority`, `gameserver.go`
`GameServerStatusPort`, `CounterStatus`, `ListStatus`; k8s.io/api
`NodeAddress`, apimachinery `LabelSelector`).

What Agones would do with a field that is not here: its allocation handler
decodes with the scheme's non-strict JSON serializer
(`pkg/gameserverallocations/controller.go`, `allocationDeserialization`),
so an unknown field is dropped in silence. Refusing it is stricter than
Agones on purpose: a dropped field is an intent of ours that never happens.
The enums are what `GameServerAllocation.Validate` answers 422 for
(`scheduling`, `gameServerState`); `state` is the three
`GameServerAllocationState` constants. Go's `omitempty` slices and maps are
left out of an answer when empty, never sent as null, so null is refused.
"""

from __future__ import annotations

from typing import Any

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}
STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": STRING}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _map_of(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": value}


# apimachinery pkg/apis/meta/v1/types.go: LabelSelector, LabelSelectorRequirement
# (key and operator have no omitempty: required).
MATCH_EXPRESSION = _object(
    {"key": STRING, "operator": STRING, "values": STRINGS}, ("key", "operator")
)
LABEL_SELECTOR_FIELDS: dict[str, Any] = {
    "matchLabels": STRING_MAP,
    "matchExpressions": {"type": "array", "items": MATCH_EXPRESSION},
}
# GameServerSelector: the LabelSelector inline, plus state, players, counters and lists.
SELECTOR = _object(
    {
        **LABEL_SELECTOR_FIELDS,
        "gameServerState": {"type": "string", "enum": ["Ready", "Allocated"]},
        "players": _object({"minAvailable": INTEGER, "maxAvailable": INTEGER}),
        "counters": _map_of(
            _object(
                {
                    "minCount": INTEGER,
                    "maxCount": INTEGER,
                    "minAvailable": INTEGER,
                    "maxAvailable": INTEGER,
                }
            )
        ),
        "lists": _map_of(
            _object({"containsValue": STRING, "minAvailable": INTEGER, "maxAvailable": INTEGER})
        ),
    }
)
SPEC = _object(
    {
        "multiClusterSetting": _object(
            {"enabled": {"type": "boolean"}, "policySelector": _object(LABEL_SELECTOR_FIELDS)}
        ),
        "required": SELECTOR,
        "preferred": {"type": "array", "items": SELECTOR},
        "priorities": {
            "type": "array",
            "items": _object({"type": STRING, "key": STRING, "order": STRING}),
        },
        "selectors": {"type": "array", "items": SELECTOR},
        "scheduling": {"type": "string", "enum": ["Packed", "Distributed"]},
        "metadata": _object({"labels": STRING_MAP, "annotations": STRING_MAP}),
        "counters": _map_of(_object({"action": STRING, "amount": INTEGER, "capacity": INTEGER})),
        "lists": _map_of(
            _object({"addValues": STRINGS, "deleteValues": STRINGS, "capacity": INTEGER})
        ),
    }
)
STATUS = _object(
    {
        "state": {"type": "string", "enum": ["Allocated", "UnAllocated", "Contention"]},
        "gameServerName": STRING,
        "ports": {"type": "array", "items": _object({"name": STRING, "port": INTEGER})},
        "address": STRING,
        "addresses": {"type": "array", "items": _object({"type": STRING, "address": STRING})},
        "nodeName": STRING,
        "source": STRING,
        "metadata": _object({"labels": STRING_MAP, "annotations": STRING_MAP}),
        "counters": _map_of(_object({"count": INTEGER, "capacity": INTEGER})),
        "lists": _map_of(_object({"capacity": INTEGER, "values": STRINGS})),
    }
)
GAMESERVERALLOCATION: dict[str, Any] = {
    "description": "GameServerAllocation, from agones v1.56.0 pkg/apis/allocation/v1/gameserverallocation.go",
    **_object(
        {
            "apiVersion": STRING,
            "kind": STRING,
            "metadata": {"type": "object"},  # ObjectMeta: checked as for every kind
            "spec": SPEC,
            "status": STATUS,
        }
    ),
}
