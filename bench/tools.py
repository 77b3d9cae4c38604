"""The load generator, the upstream and the proxy we compare with: wrk, nginx, CHP.

Found on the machine, else installed from package registries only: apt for
wrk, nginx and npm; npm for configurable-http-proxy into bench/.cache (git-
ignored). When an install is impossible the caller gets None and a note, and
falls back (a Python load generator, bench/tiny_pod.py as the upstream, no
CHP column) saying so in its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .report import say

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"


def _which(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (
            str(p)
            for d in ("/usr/sbin", "/usr/local/sbin", "/sbin")
            if (p := Path(d) / binary).exists()
        ),
        None,
    )


_apt_updated = False


def apt_install(*packages: str) -> str:
    """Install Debian packages when we can; returns a note when we cannot."""
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"cannot install {' '.join(packages)}: not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    say(f"installing {' '.join(packages)} with apt-get")
    for attempt in range(2):
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode == 0:
            return ""
        if attempt == 0 and not _apt_updated:
            _apt_updated = True
            subprocess.run(
                ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False
            )
            continue
        break
    return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"


def locate(binary: str, package: str) -> tuple[str | None, str]:
    """(path, note): the binary, installed from Debian when missing and possible."""
    path = _which(binary)
    if path:
        return path, ""
    note = apt_install(package)
    return _which(binary), note


def chp_binary() -> tuple[str | None, str]:
    """configurable-http-proxy under bench/.cache, installed with npm when missing."""
    binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if binary.exists():
        return str(binary), ""
    note = ""
    if not shutil.which("npm"):
        note = apt_install("nodejs", "npm")
    if not shutil.which("npm"):
        return None, f"configurable-http-proxy unavailable: no npm ({note})"
    CACHE.mkdir(parents=True, exist_ok=True)
    say("installing configurable-http-proxy with npm into bench/.cache")
    done = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(CACHE),
            "--no-audit",
            "--no-fund",
            "configurable-http-proxy",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not binary.exists():
        return None, f"npm install configurable-http-proxy failed: {done.stderr.strip()[-300:]}"
    return str(binary), ""


def chp_version() -> str:
    with contextlib.suppress(OSError, ValueError):
        pkg = CACHE / "node_modules" / "configurable-http-proxy" / "package.json"
        return json.loads(pkg.read_text())["version"]
    return "?"


def tool_version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "?"
