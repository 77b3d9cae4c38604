"""The static checks stay honest: mypy runs in `make lint`, over the three packages,
and every silenced finding says which one and why (issue 18)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("broker", "fleet", "reaper")
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")
NOQA_C901 = re.compile(r"#\s*noqa:[^#]*\bC901\b")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _explained(lines: list[str], i: int, rest: str) -> bool:
    """A reason after the ignore on its line, or a comment line just above it (or above a
    run of such lines, which it then explains all together)."""
    if rest.strip().startswith("#") and len(rest.strip()) > 2:
        return True
    j = i - 1
    while j >= 0 and IGNORE.search(lines[j]):
        j -= 1
    return j >= 0 and lines[j].strip().startswith("#")


def test_make_lint_runs_mypy_on_the_three_packages() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/mypy" in lint
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert set(PACKAGES) <= set(config["packages"])
    assert config["warn_unused_ignores"] is True
    assert "ignore-without-code" in config["enable_error_code"]
    # Missing types are forgiven per library only, never for everything.
    assert "ignore_missing_imports" not in config


def test_every_exemption_names_its_finding_and_says_why() -> None:
    """A `type: ignore` names its error code and has a reason; a C901 `noqa` (complexity,
    exempted per function only) has its reason on the comment line above."""
    bare, unexplained = [], []
    for path in _sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            found = IGNORE.search(line)
            if found is None:
                continue
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            if not found["codes"]:
                bare.append(where)
            elif not _explained(lines, i, found["rest"]):
                unexplained.append(where)
    for path in sorted({*_sources(), *ROOT.glob("bench/**/*.py"), *ROOT.glob("tests/**/*.py")}):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if NOQA_C901.search(line) and not (i and lines[i - 1].strip().startswith("#")):
                unexplained.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert bare == [], "type: ignore without an error code"
    assert unexplained == [], "an exemption without a reason (a comment after it or above)"
