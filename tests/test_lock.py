"""The locks in requirements/: complete, hashed, true to pyproject, and what everything installs.

`make lock` writes them with uv; `make demo`, `make test`, `.ci/run` and both
Dockerfiles install from them with pip's hash checking. These checks need no
network: they read the files and this interpreter's installed packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.locks import applicable, drift, read_lock
from tests.support.procs import REPO

LOCKS = REPO / "requirements"
RUNTIME, TEST, BUILD, TOOLS = (LOCKS / f"{n}.txt" for n in ("runtime", "test", "build", "tools"))
AGENT = REPO / "webui-image" / "agent-requirements.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(line) for line in listed]


@pytest.mark.parametrize("lock", [RUNTIME, TEST, BUILD, TOOLS, AGENT], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(lock) -> None:
    pins = read_lock(lock)
    assert pins, f"{lock} pins nothing"
    text = lock.read_text()
    assert "make lock" in text, "written by `make lock` (its header names the command)"
    for pin in pins:
        assert pin.hashes, f"{lock.name}: {pin.name}=={pin.version} has no sha256 hash"
    # No line outside the pins' own: no -e, no URL, no unpinned name.
    for line in text.splitlines():
        if line and not line.startswith(("#", " ")):
            assert re.match(r"^[A-Za-z0-9][\w.-]*==", line), f"{lock.name}: {line!r}"


@pytest.mark.parametrize(("extra", "lock"), [(None, RUNTIME), ("test", TEST)])
def test_the_lock_satisfies_pyproject(extra, lock) -> None:
    pins = applicable(lock)
    for req in requirements(extra):
        if req.marker is not None and not req.marker.evaluate():
            continue
        pin = pins.get(canonicalize_name(req.name))
        assert pin, f"{req.name} is in pyproject.toml but not in {lock.name}: run make lock"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{lock.name} pins {req.name}=={pin.version}, outside pyproject's {req.specifier}"
        )


def test_test_lock_holds_the_runtime_versions() -> None:
    """make demo and make test run the broker on the same versions."""
    runtime = {p.name: p.version for p in read_lock(RUNTIME)}
    test = {p.name: p.version for p in read_lock(TEST)}
    assert {n: test.get(n) for n in runtime} == runtime


def test_runtime_lock_has_no_test_tool() -> None:
    """make demo installs only what the broker runs with."""
    runtime = {p.name for p in read_lock(RUNTIME)}
    test_only = {canonicalize_name(r.name) for r in requirements("test")}
    assert runtime & test_only == set()


def test_aiohttp_is_bounded_to_the_tested_minor() -> None:
    """broker/proxy/aiohttp_internals.py uses aiohttp internals: no untested minor slips in."""
    (aiohttp,) = [r for r in requirements() if r.name == "aiohttp"]
    locked = Version(applicable(RUNTIME)["aiohttp"].version)
    assert aiohttp.specifier.contains(locked)
    assert not aiohttp.specifier.contains(Version(f"{locked.major}.{locked.minor + 1}.0"))


def test_the_agent_image_gets_the_aiohttp_its_tests_run_with() -> None:
    agent = {p.name: p.version for p in read_lock(AGENT) if p.marker is None}
    assert agent["aiohttp"] == applicable(RUNTIME)["aiohttp"].version
    # Built for the image's Python 3.10 as well as this one.
    assert any(p.marker is not None and "3.11" in str(p.marker) for p in read_lock(AGENT))


def test_the_build_backend_is_locked() -> None:
    (setuptools,) = read_lock(BUILD)
    backend = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert [r.name for r in backend] == ["setuptools"]
    assert backend[0].specifier.contains(setuptools.version)


def test_make_and_the_dockerfiles_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r $(LOCKS)/runtime.txt" in makefile
    assert "--require-hashes -r $(LOCKS)/test.txt" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    # Only test-latest installs anything by name, and never into the locked venv.
    for line in makefile.splitlines():
        if "pip install" in line and "--require-hashes" not in line:
            assert "--no-deps" in line or "$(LATEST)" in line, line
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/build.txt" in dockerfile
    assert "--require-hashes --wheel-dir /wheels -r requirements/runtime.txt" in dockerfile
    assert "pip install --no-index --no-deps /wheels/*.whl" in dockerfile
    webui = (REPO / "webui-image" / "Dockerfile").read_text()
    assert "--require-hashes -r /opt/agent/requirements.txt" in webui
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "pip install" not in ci


@pytest.mark.skipif(
    os.environ.get("SDBROKER_TEST_UNLOCKED") == "1",
    reason="make test-latest runs unlocked on purpose",
)
def test_this_environment_is_the_lock() -> None:
    """What the suite runs on is exactly requirements/test.txt (make test, .ci/run)."""
    assert drift(TEST) == []


def test_the_project_builds_without_a_warning(tmp_path) -> None:
    """What make runs to install sdbroker itself prints no build-backend warning.

    (setuptools warned 15 lines, three times, about the old license table.)
    The machine's own pip configuration is left out: only the build speaks.
    """
    source = tmp_path / "src"  # a copy: setuptools leaves build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("broker", "fleet", "reaper"):
        shutil.copytree(REPO / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--wheel-dir", str(tmp_path), str(source)],
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "warning" not in output.lower(), output
    assert list(tmp_path.glob("sdbroker-*.whl"))
