"""Each package keeps to its public face (issue 18): outside `fleet`, code imports `fleet`
and the five modules it exports as namespaces, never another of its modules; `broker`
imports `reaper`, never a module inside it. So a module of fleet can change shape
without a caller breaking, and what callers rely on is listed in one place.

The contracts live in pyproject's [tool.importlinter] (`make lint` runs them); these
tests show they catch a deep import, and keep what fleet exports honest.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import fleet

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
NAMESPACES = {"keys", "redis_text", "specstore", "start_health", "heartbeats"}


def _copy_tree(dest: Path) -> None:
    for package in ("broker", "fleet", "reaper"):
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_a_deep_import_breaks_the_contracts(tmp_path: Path) -> None:
    """A copy of the tree with three deep imports added fails `lint-imports`, naming
    each; the imports of fleet's namespaces are not reported."""
    _copy_tree(tmp_path)
    _append(tmp_path / "broker" / "pages.py", "from fleet.events import Handler as _Handler")
    _append(tmp_path / "reaper" / "policy.py", "from fleet.leader import LeaderLock as _Lock")
    _append(tmp_path / "broker" / "gateway.py", "from reaper.policy import Policy as _Policy")
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    for link in (
        "broker.pages -> fleet.events",
        "reaper.policy -> fleet.leader",
        "broker.gateway -> reaper.policy",
    ):
        assert link in out, f"{link} not reported:\n{out}"
    assert "-> fleet.keys" not in out and "-> fleet.specstore" not in out, out


def _deep_imports(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in {"fleet", "reaper"} - {package} and "." in module:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    return found


def test_namespaces_too_come_through_fleet() -> None:
    """`from fleet import keys`, never `from fleet.keys import session`: the contract
    lets the namespace modules through, this keeps them reached by their face."""
    assert _deep_imports("broker") + _deep_imports("reaper") == []


def test_fleet_exports_nothing_nobody_uses() -> None:
    """Every name fleet exports is imported by broker, reaper, tests or bench (a dead
    re-export is a promise nobody needs), and the namespaces are the five the
    contract allows."""
    used: set[str] = set()
    sources = [ROOT / d for d in ("broker", "reaper", "tests", "bench")]
    for path in (p for d in sources for p in d.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "fleet" and node.level == 0:
                used |= {alias.name for alias in node.names}
    assert sorted(set(fleet.__all__) - used) == []
    modules = {name for name in fleet.__all__ if type(getattr(fleet, name)).__name__ == "module"}
    assert modules == NAMESPACES
