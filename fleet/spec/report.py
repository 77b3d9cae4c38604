"""Turning validation failures into `FILE:LINE: field: message` lines.

Pydantic's messages name Python types ("Input should be a valid integer");
the admin should read "must be a whole number, got 'four'" next to the line
they wrote it on.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails
from typing_extensions import is_typeddict  # typing's misses typing_extensions' TypedDicts

from .yamlfile import Loc, YamlDocument


@dataclass(frozen=True)
class SpecIssue:
    """One mistake in a fleet file, printed as `FILE:LINE: field: message`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class SpecError(Exception):
    """The fleet file is unusable; `issues` lists every mistake found, in line order."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        super().__init__("\n".join(map(str, issues)))
        self.issues = issues

    def __str__(self) -> str:
        return "\n".join(map(str, self.issues))


def issues_at(doc: YamlDocument, filename: str, problems: list[tuple[Loc, str]]) -> list[SpecIssue]:
    """Place each (loc, message) at its line; drop repeats; order by line."""
    issues: dict[SpecIssue, None] = {}  # an ordered set
    for loc, text in problems:
        line, field = doc.locate(loc)
        issues.setdefault(SpecIssue(filename, line, field or "file", text), None)
    return sorted(issues, key=lambda issue: issue.line)


_MESSAGES = {
    "missing": "missing required field",
    "invalid_key": "unknown field",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
}
# Type and range errors say what was found: "must be a list, got a mapping".
_SHOW_INPUT = {
    kind
    for kind in _MESSAGES
    if kind.endswith(("_type", "_parsing", "_from_float", "_than", "_than_equal"))
}


def message(error: ErrorDetails, root: type[BaseModel]) -> str:
    """Pydantic's error in the admin's words; `root` is the model the loc starts from."""
    kind, ctx, loc = error["type"], error.get("ctx", {}), error["loc"]
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _field_names_at(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        return f"unknown field (did you mean '{close[0]}'?)" if close else "unknown field"
    if loc and loc[-1] == "[key]":
        return "key must not be empty" if kind.endswith("too_short") else "key must be a string"
    if kind in ("too_short", "string_too_short"):
        size = ctx.get("min_length", 1)
        return "must not be empty" if size == 1 else f"must have at least {size} items"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')}, {got(error['input'])}"
    text = _MESSAGES[kind].format(**ctx) if kind in _MESSAGES else error["msg"]
    return f"{text}, {got(error['input'])}" if kind in _SHOW_INPUT else text


def got(value: Any) -> str:
    """What the admin wrote, in YAML words."""
    if value is None:
        return "got nothing"
    if isinstance(value, bool):
        return f"got {str(value).lower()}"
    if isinstance(value, int | float):
        return f"got {value}"
    if isinstance(value, str):
        return f"got '{value if len(value) <= 40 else value[:37] + '...'}'"
    return "got a list" if isinstance(value, list) else "got a mapping"


def _field_names_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model (or TypedDict) at `loc`, for "did you mean"; [] if none."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = _inner_model(fields[part].annotation)
    if is_typeddict(model):
        return list(model.__annotations__)
    return list(getattr(model, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    if is_typeddict(annotation) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    ):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
