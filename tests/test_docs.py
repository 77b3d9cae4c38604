"""The guides in docs/ stay true to the repo: links, variables, paths, commands, fleet files.

Fast and offline: it reads the Markdown, the settings model and the CLI parser.
"""

from __future__ import annotations

import argparse
import os
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
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
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


# Behavioural claims of docs/operations.md, each checked against the real thing: the
# sentence must be there, and the broker or reaper must do what it says.
OPERATIONS = DOCS / "operations.md"


def _prose(path: Path) -> str:
    return " ".join(FENCE.sub("", path.read_text()).split())


def test_prometheus_behind_iap_gets_in_by_address(brokers, tmp_path):
    """operations.md: SDB_METRICS_CIDRS lets Prometheus in without IAP's token (measured)."""
    import urllib.error
    import urllib.request
    from unittest import mock

    from tests.identity.iap_keys import IapKeys
    from tests.support import procs

    text = _prose(OPERATIONS)
    assert "the broker answers it 200 without IAP's token" in text
    assert "gets 401" not in text
    keys = IapKeys().start()  # Google's key set, served on loopback
    # In iap mode readyz wants a token like every page but healthz: wait on healthz.
    http_ok = procs.http_ok
    healthz = lambda url: http_ok(url.replace("/_broker/readyz", "/_broker/healthz"))  # noqa: E731
    try:
        with mock.patch.object(procs, "http_ok", healthz):
            broker = brokers(
                SDB_AUTH="iap",
                SDB_IAP_AUDIENCE="/projects/1/global/backendServices/2",
                SDB_IAP_JWKS_URL=keys.jwks_url,
                SDB_METRICS_CIDRS="127.0.0.1/32",
            )
    finally:
        keys.stop()
    with urllib.request.urlopen(broker.url + "/_broker/metrics", timeout=10) as resp:
        assert resp.status == 200 and b"sdbroker_build_info" in resp.read()
    with pytest.raises(urllib.error.HTTPError) as refused:  # any other page: IAP's token first
        urllib.request.urlopen(broker.url + "/_broker/gallery", timeout=10)
    refused.value.close()  # the error holds the response and its socket
    assert refused.value.code == 401


def test_cronjob_reaper_takes_no_leader_lock(redis_url, tmp_path):
    """operations.md: the CronJob takes no lock; it reaps while a broker holds the reaper's."""
    import subprocess
    import sys

    import redis

    from fleet import keys
    from tests.support.procs import REPO, write_fleet

    assert "The CronJob takes no lock" in _prose(OPERATIONS)
    assert "Both take the same Redis leader lock" not in _prose(OPERATIONS)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(keys.REAPER_LEADER, "a-broker-s-token", px=60_000)  # a broker's reaper leads
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs")
    env = {**os.environ, "SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet),
           "SDB_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "reaper", "--once"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "reclaimed" in run.stdout  # its JSON line: the cycle ran
    assert client.hget(keys.HEARTBEATS, "reaper")  # and left its heartbeat
    assert client.get(keys.REAPER_LEADER) == "a-broker-s-token"  # the lock untouched
    client.close()
