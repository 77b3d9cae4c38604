"""Label and field selectors, parsed the way the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})$")
_EXISTS_RE = re.compile(rf"^({_KEY})$")
_NOT_EXISTS_RE = re.compile(rf"^!\s*({_KEY})$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case "!":
                return not present
            case ">" | "<":
                try:
                    number = int(value or "")
                except ValueError:
                    return False
                bound = int(self.values[0])
                return number > bound if self.op == ">" else number < bound
        return False


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3`; 400 Bad Request on errors."""
        if not text or not text.strip():
            return cls()
        return cls(tuple(_parse_requirement(part.strip()) for part in _split_top(text)))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """A metav1.LabelSelector: `matchLabels` and `matchExpressions`."""
        spec = spec or {}
        reqs = [Requirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expr in spec.get("matchExpressions") or []:
            op = ops.get(expr.get("operator", ""))
            if op is None:
                raise bad_request(
                    f"{expr.get('operator')!r} is not a valid label selector operator"
                )
            reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
        return cls(tuple(reqs))


def selector_problems(spec: Mapping[str, Any] | None) -> list[str]:
    """Why `metav1.LabelSelectorAsSelector` refuses a selector object (none: it is valid).

    The checks of apimachinery's `labels.NewRequirement`: a known operator,
    values for In/NotIn, none for Exists/DoesNotExist, valid keys and values.
    """
    spec = spec or {}
    problems = []
    pairs = [(k, "In", [v]) for k, v in (spec.get("matchLabels") or {}).items()]
    for expr in spec.get("matchExpressions") or []:
        pairs.append((expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []))
    for key, op, values in pairs:
        if not re.fullmatch(_KEY, str(key)) or len(str(key).rsplit("/", 1)[-1]) > 63:
            problems.append(f"key: Invalid value: {key!r}: not a qualified label name")
        if op in ("In", "NotIn") and not values:
            problems.append("values: for 'in', 'notin' operators, values set can't be empty")
        elif op in ("Exists", "DoesNotExist") and values:
            problems.append("values: values set must be empty for exists and does not exist")
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            problems.append(f"{op!r} is not a valid label selector operator")
        problems += [
            f"values: Invalid value: {v!r}: not a label value"
            for v in values
            if not re.fullmatch(_VALUE, str(v)) or len(str(v)) > 63
        ]
    return problems


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _parse_requirement(part: str) -> Requirement:
    if m := _SET_RE.match(part):
        values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
        if not values or not all(_VALUE_RE.match(v) for v in values):
            raise bad_request(f"unable to parse requirement: invalid values in {part!r}")
        return Requirement(m.group(1), m.group(2), values)
    if m := _CMP_RE.match(part):
        op = "=" if m.group(2) == "==" else m.group(2)
        if op in (">", "<") and not m.group(3).lstrip("-").isdigit():
            raise bad_request(f"unable to parse requirement: {part!r}: value must be an integer")
        return Requirement(m.group(1), op, (m.group(3),))
    if m := _NOT_EXISTS_RE.match(part):
        return Requirement(m.group(1), "!")
    if m := _EXISTS_RE.match(part):
        return Requirement(m.group(1), "exists")
    raise bad_request(f"unable to parse requirement: found {part!r}, expected a label requirement")


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in self.terms)

    @classmethod
    def parse(cls, text: str | None, allowed: Iterable[str]) -> FieldSelector:
        """Parse `metadata.name=x,status.phase!=Failed`; only `allowed` fields, as the server does."""
        if not text or not text.strip():
            return cls()
        allowed = set(allowed)
        terms = []
        for part in text.split(","):
            part = part.strip()
            m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
            if not m:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
            if m.group(1) not in allowed:
                raise bad_request(f"field label not supported: {m.group(1)}")
            terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
        return cls(tuple(terms))


def field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)
