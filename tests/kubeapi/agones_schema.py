"""Every Agones object the simulator accepts or answers, held to Agones v1.56.0's own schemas.

A simulator that shares our assumptions proves nothing, so the Agones kinds
are checked as a real API server checks them, offline:

- GameServer, Fleet, FleetAutoscaler: the CRD `openAPIV3Schema` kept in
  `ingress/schemas/agones-v1.56.0/` (unchanged from Agones v1.56.0
  `install/yaml/install.yaml`); GameServerAllocation: allocation_schema.py.
- Made strict: `nullable: true` allows null, `x-kubernetes-*` keys are
  dropped, and a field the schema does not declare is refused. A real API
  server prunes such a field from a custom object without a word
  (apiextensions-apiserver, structural schema pruning), so it is an intent
  of ours that silently never happens: worse than an error.
- `metadata` is Kubernetes' own ObjectMeta (kubernetes-validate's strict
  1.34 schema), where the CRD says only `type: object`.

Two checks, kept apart by whose fault a violation is:

- `refuse(res, obj)`: a client's request body, or what its patch makes of the
  object: a 422 Invalid naming each field, as the API server answers; also
  recorded in `refused`.
- `stored(res, obj)` / `answered(res, obj)`: what the simulator itself keeps or
  answers (its status writes, the fleet controller's GameServers, allocation
  answers): a violation is a simulator bug, recorded in `violations` and raised.

`KubeSim.stop()` fails while either list holds anything: a test that sends an
invalid object on purpose takes what it expects with `take()`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing import Resource as SchemaResource
from referencing.jsonschema import DRAFT4

from . import errors
from .allocation_schema import GAMESERVERALLOCATION
from .resources import FLEETAUTOSCALERS, FLEETS, GAMESERVERALLOCATIONS, GAMESERVERS, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "ingress" / "schemas" / "agones-v1.56.0"
CRD_FILES = {
    GAMESERVERS: "GameServer-agones.dev-v1.json",
    FLEETS: "Fleet-agones.dev-v1.json",
    FLEETAUTOSCALERS: "FleetAutoscaler-autoscaling.agones.dev-v1.json",
}
CHECKED = (*CRD_FILES, GAMESERVERALLOCATIONS)
# ObjectMeta from the Kubernetes version whose schemas the core kinds are checked against
# (tests/test_kubeapi_schema.py): the newest Agones 1.56 supports.
KUBERNETES = "v1.34.0-local-strict"
DEFINITIONS = "/api/_definitions.json"
OBJECT_META = {"$ref": f"{DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


class SchemaViolation(AssertionError):
    """The simulator stored or answered an object that Agones' schema refuses."""


def strict_crd_schema(node: Any) -> Any:
    """OpenAPI v3 (CRD flavour) -> JSON Schema draft 4 that refuses unknown fields."""
    if isinstance(node, list):
        return [strict_crd_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_crd_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _definitions() -> SchemaResource[Any]:
    import kubernetes_validate  # the package's data: its own loader knows where

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / KUBERNETES
    return DRAFT4.create_resource(json.loads((folder / "_definitions.json").read_text()))


@functools.cache
def validator(res: Resource) -> jsonschema.Draft4Validator:
    """The strict validator of one Agones kind (its top-level metadata as ObjectMeta)."""
    if res is GAMESERVERALLOCATIONS:
        schema = json.loads(json.dumps(GAMESERVERALLOCATION))
    else:
        schema = strict_crd_schema(json.loads((SCHEMAS / CRD_FILES[res]).read_text()))
    schema["properties"].update(
        apiVersion={"type": "string", "enum": [res.api_version]},
        kind={"type": "string", "enum": [res.kind]},
        metadata=OBJECT_META,
    )
    registry: Registry[Any] = Registry().with_resource(DEFINITIONS, _definitions())
    return jsonschema.Draft4Validator(schema, registry=registry)


def problems(res: Resource, obj: Any) -> list[str]:
    """Each place `obj` breaks its kind's schema, as `path: Invalid value: ...: why`."""
    found = []
    for err in sorted(validator(res).iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path).lstrip(".")
        if err.validator == "additionalProperties" and err.validator_value is False:
            extra = sorted(set(err.instance) - set(err.schema.get("properties") or {}))
            for name in extra:
                where = f"{path}.{name}" if path else name
                found.append(
                    f"{where}: Invalid value: field not declared in the schema of {res.kind} "
                    f"(Agones v1.56.0): a real API server drops it without a word"
                )
            continue
        value = json.dumps(err.instance, default=str)[:80]
        found.append(f"{path or '<object>'}: Invalid value: {value}: {err.message[:200]}")
    return found


class SchemaChecks:
    """What one simulator refused and what it got wrong itself."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.violations: list[str] = []

    def refuse(self, res: Resource, obj: Any) -> None:
        """A client's object: 422 Invalid naming every field that breaks the schema."""
        if res not in CHECKED:
            return
        found = problems(res, obj)
        if found:
            name = _name(obj)
            self.refused.append(f"{res.kind} {name!r}: " + "; ".join(found))
            raise errors.invalid(res.kind, name, ", ".join(found), res.group)

    def stored(self, res: Resource, obj: Any) -> None:
        """An object the simulator is about to keep (and so to answer and send on watches)."""
        if res in CRD_FILES:
            self._own(res, obj, "stored")

    def answered(self, res: Resource, obj: Any) -> None:
        """An answer the simulator makes without storing it (a GameServerAllocation)."""
        if res in CHECKED:
            self._own(res, obj, "answered")

    def take(self) -> list[str]:
        """Everything recorded so far, cleared: for tests that break the schema on purpose."""
        taken = self.refused + self.violations
        self.refused, self.violations = [], []
        return taken

    def check_clean(self) -> None:
        """Fail if anything was refused or got wrong since the last `take()`."""
        if self.refused or self.violations:
            lines = [f"refused: {r}" for r in self.refused]
            lines += [f"simulator: {v}" for v in self.violations]
            raise SchemaViolation(
                "Agones objects broke Agones v1.56.0's schema:\n" + "\n".join(lines)
            )

    def _own(self, res: Resource, obj: Any, how: str) -> None:
        found = problems(res, obj)
        if found:
            message = f"kubesim {how} {res.kind} {_name(obj)!r}: " + "; ".join(found)
            self.violations.append(message)
            raise SchemaViolation(message)


def _name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("name") or (meta or {}).get("generateName") or "")
