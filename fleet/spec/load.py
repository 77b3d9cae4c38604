"""Reading a fleet file: YAML with lines, then the models, every mistake as `FILE:LINE`.

Every mistake in the file comes back as `FILE:LINE: field: message`, all of
them at once, never a traceback, so the admin fixes the file in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from .models import BACKENDS, FleetSpec, fleet_problems
from .report import SpecError, SpecIssue, got, issues_at, message
from .yamlfile import Loc, YamlSyntaxError, load_yaml


def load_spec(path: str | Path) -> FleetSpec:
    """Read and validate a fleet file; SpecError lists every mistake with its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecIssue(str(path), 1, "file", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise SpecError([SpecIssue(str(path), 1, "file", "is not UTF-8 text")]) from None
    return parse_spec(text, str(path))


def _not_text(data: object, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """Where a key or value holds a lone surrogate, which no encoding can write."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            yield loc, f"holds {data[exc.start]!r}, half of a surrogate pair: not a character"
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _not_text(key, loc)
            yield from _not_text(value, (*loc, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _not_text(value, (*loc, i))


def parse_spec(text: str, filename: str = "<fleet.yaml>") -> FleetSpec:
    """Validate fleet YAML given as text (hot reload keeps the text in Redis)."""
    try:
        doc = load_yaml(text)
    except YamlSyntaxError as exc:
        raise SpecError([SpecIssue(filename, exc.line, "syntax", exc.message)]) from None
    shape = "a mapping with backend: and profiles:"
    if doc.data is None:
        raise SpecError([SpecIssue(filename, 1, "file", f"is empty; expected {shape}")])
    if not isinstance(doc.data, dict):
        found = got(doc.data).removeprefix("got ")
        raise SpecError([SpecIssue(filename, 1, "file", f"must be {shape}, not {found}")])
    broken = list(_not_text(doc.data))
    if broken:  # escaped lone surrogates ("\ud800") load from YAML but are no characters
        raise SpecError(issues_at(doc, filename, broken))
    try:
        spec = FleetSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems = [(tuple(e["loc"]), message(e, FleetSpec)) for e in exc.errors()]
        raw = doc.data.get("profiles")
        backend = doc.data.get("backend")
        if isinstance(raw, list):
            problems += fleet_problems(
                backend if backend in BACKENDS else None, list(enumerate(raw))
            )
        raise SpecError(issues_at(doc, filename, problems)) from None
    spec._source_text = text
    return spec
