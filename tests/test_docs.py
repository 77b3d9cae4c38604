"""The guides in docs/ stay true to the repo: links, variables, paths, commands, fleet files.

Fast and offline: it reads the Markdown, the settings model and the CLI parser.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from broker.cli import build_parser
from broker.settings import Settings
from fleet import load_spec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = sorted(DOCS.glob("*.md"))
AGENT_README = ROOT / "webui-image" / "README.md"

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SDB_VAR = re.compile(r"\bSDB_[A-Z0-9_]*[A-Z0-9]\b")
INGRESS_PATH = re.compile(r"(?<![\w./-])ingress/[A-Za-z0-9_.\-/]*")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
# `sdbroker WORD [WORD]` as a command: not a namespace (`-n sdbroker`), a user
# (`sudo -u sdbroker`, `sdbroker sdbroker` in tmpfiles.d), a path
# (`deploy/sdbroker`; `.venv/bin/sdbroker` is a command), a value (`User=sdbroker`) or a name (`sdbroker-secrets`).
COMMAND = re.compile(
    r"(?:(?<=bin/)|(?<![\w./:=-]))(?<!-n )(?<!-u )(?<!--namespace )(?<!sdbroker )"
    r"sdbroker(?![ \t]+sdbroker\b)[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?"
)
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)


def test_there_are_guides():
    names = {p.name for p in GUIDES}
    assert {
        "README.md",
        "gke-iap.md",
        "kubernetes-oidc.md",
        "workstation.md",
        "operations.md",
        "identity.md",
    } <= names


def _code(text: str) -> str:
    """Everything in fenced blocks and inline code spans."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return "\n".join(blocks + SPAN.findall(prose))


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_relative_links_resolve(guide):
    text = FENCE.sub("", guide.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (guide.parent / path_part).resolve() if path_part else guide
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not broken, f"{guide.name}: " + "; ".join(broken)


def test_every_sdb_variable_exists():
    known = {f"SDB_{name.upper()}" for name in Settings.model_fields}
    known |= set(SDB_VAR.findall(AGENT_README.read_text()))
    unknown = {
        f"{guide.name}: {var}"
        for guide in GUIDES
        for var in SDB_VAR.findall(guide.read_text())
        if var not in known
    }
    assert not unknown, sorted(unknown)


def test_every_ingress_path_exists():
    missing = set()
    for guide in GUIDES:
        for raw in INGRESS_PATH.findall(guide.read_text()):
            path = raw.rstrip(".,:;")
            if not (ROOT / path).exists():
                missing.add(f"{guide.name}: {path}")
    assert not missing, sorted(missing)


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def test_every_sdbroker_command_is_accepted():
    top = _choices(build_parser())
    bad, seen = set(), set()
    for guide in GUIDES:
        for first, second in COMMAND.findall(_code(guide.read_text())):
            seen.add((first, second))
            if first not in top:
                bad.add(f"{guide.name}: sdbroker {first}")
                continue
            sub = _choices(top[first])
            if sub and second not in sub:
                bad.add(f"{guide.name}: sdbroker {first} {second}")
    assert not bad, sorted(bad)
    # The pattern does find the commands the guides rely on.
    found = {f"{first} {second}".strip() for first, second in seen}
    assert {"fleet apply", "fleet diff", "fleet status", "fleet render", "fleet validate"} <= found
    assert any(f.startswith("serve") for f in found)


def test_fleet_files_in_guides_validate(tmp_path):
    """Every complete fleet file shown (a yaml block starting with `backend:`) is valid."""
    checked = 0
    for guide in GUIDES:
        for block in re.findall(r"^```yaml\n(.*?)^```", guide.read_text(), re.S | re.M):
            if not block.startswith("backend:"):
                continue
            path = tmp_path / f"{guide.stem}-{checked}.yaml"
            path.write_text(block)
            load_spec(path)  # raises SpecError naming the line and field
            checked += 1
    assert checked >= 3
