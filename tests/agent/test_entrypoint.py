"""``entrypoint.sh``, the container's supervisor: both processes up, one down means all down.

Run with the stub as the WebUI (the container's arguments replace the
A1111 command) and the agent from the source tree, as the image runs them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.agent.conftest import (
    ENTRYPOINT,
    Pod,
    Proc,
    clean_env,
    points_at,
    ready_is,
    stub_options,
    wait_until,
)


def child_pids(proc: Proc) -> tuple[int, int]:
    match = re.search(r"started agent \(pid (\d+)\) and WebUI \(pid (\d+)\)", proc.output())
    assert match, proc.output()
    return int(match[1]), int(match[2])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def started(pod: Pod, http: aiohttp.ClientSession, proc: Proc) -> tuple[int, int]:
    await wait_until(lambda: ready_is(http, pod, 200), "agent /ready", [proc])
    return child_pids(proc)


async def test_sigterm_stops_both_and_exits_zero(pod: Pod, http: aiohttp.ClientSession) -> None:
    entry = pod.start_entrypoint(*pod.stub_cmd(), SDB_AGENT_MODE="standalone")
    agent_pid, webui_pid = await started(pod, http, entry)
    # standalone (e.g. plain `docker run`) is readiness only: the folders stay A1111's
    assert points_at(await stub_options(http, pod), pod.stub_out)

    entry.signal(signal.SIGTERM)
    assert await entry.wait_exit() == 0
    assert gone(agent_pid) and gone(webui_pid)
    assert "stop requested" in entry.output()


async def test_a_dead_webui_ends_the_container(pod: Pod) -> None:
    entry = pod.start_entrypoint("sleep", "60", SDB_AGENT_MODE="standalone")
    await wait_until(lambda: "started agent" in entry.output(), "both started", [entry])
    agent_pid, webui_pid = child_pids(entry)

    os.kill(webui_pid, signal.SIGKILL)
    assert await entry.wait_exit() == 128 + signal.SIGKILL
    assert gone(agent_pid)
    assert "WebUI exited with status 137" in entry.output()


async def test_a_fatal_agent_ends_the_container(pod: Pod) -> None:
    entry = pod.start_entrypoint(
        *pod.stub_cmd(), SDB_AGENT_MODE="kubernetes", SDB_AGENT_PODINFO_DIR="/nonexistent"
    )
    assert await entry.wait_exit() == 2
    _, webui_pid = child_pids(entry)
    assert gone(webui_pid)
    log = entry.output()
    assert "fatal: /nonexistent/labels is missing: mount a downwardAPI volume" in log
    assert "agent exited with status 2" in log


def run_default(models: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint with no arguments, i.e. the A1111 command, printed instead of run."""
    return subprocess.run(
        ["bash", str(ENTRYPOINT)],
        env=clean_env(MODELS_DIR=str(models), WEBUI_DIR=str(models.parent), **env),
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_default_command_is_a1111_listening_with_the_api(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "Stable-diffusion" / "sd15").mkdir(parents=True)
    (models / "Stable-diffusion" / "sd15" / "v1-5.safetensors").write_bytes(b"")
    (models / "VAE").mkdir()
    (models / "Lora").mkdir()
    done = run_default(models, SDB_PRINT_COMMAND="1", WEBUI_EXTRA_ARGS="--xformers --medvram")
    assert done.returncode == 0, done.stdout + done.stderr
    argv = done.stdout.split()
    assert argv[1:3] == ["launch.py", "--skip-prepare-environment"]
    flags = " ".join(argv[3:])
    for wanted in (
        "--listen --port 7860 --api",
        "--data-dir /data",
        f"--ckpt-dir {models}/Stable-diffusion",
        "--no-download-sd-model",
        f"--vae-dir {models}/VAE",
        f"--lora-dir {models}/Lora",
        "--xformers --medvram",
    ):
        assert wanted in flags, flags
    assert "--embeddings-dir" not in flags  # absent folders are not passed to A1111


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ([], "Stable-diffusion is missing: mount the models volume"),
        (["Stable-diffusion/README.txt"], "no checkpoint (*.safetensors, *.ckpt) under"),
    ],
)
def test_no_model_is_fatal_before_anything_starts(
    tmp_path: Path, layout: list[str], message: str
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in layout:
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_text("put checkpoints here")
    done = run_default(models)
    assert done.returncode == 2
    assert "fatal: " in done.stdout and message in done.stdout


def a1111_models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / "v1-5.safetensors").write_bytes(b"")
    return models


def extension_installs_allowed(argv: list[str]) -> bool:
    """A1111's own rule (modules/shared_cmd_options.py, v1.10): the UI's extension
    installer is off when it listens beyond loopback, unless explicitly let in."""
    non_local = any(flag in argv for flag in ("--share", "--listen", "--ngrok", "--server-name"))
    return not non_local or "--enable-insecure-extension-access" in argv


def test_extension_installs_are_off_unless_the_profile_allows_them(tmp_path: Path) -> None:
    models = a1111_models(tmp_path)
    default = run_default(models, SDB_PRINT_COMMAND="1")
    assert default.returncode == 0, default.stdout + default.stderr
    assert not extension_installs_allowed(default.stdout.split())

    allowed = run_default(models, SDB_PRINT_COMMAND="1", WEBUI_ALLOW_EXTENSIONS="1")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    argv = allowed.stdout.split()
    assert extension_installs_allowed(argv) and "--listen" in argv
    assert argv.count("--enable-insecure-extension-access") == 1


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        (
            {"WEBUI_EXTRA_ARGS": "--xformers --enable-insecure-extension-access"},
            [],
            "set WEBUI_ALLOW_EXTENSIONS=1 instead",
        ),
        ({"WEBUI_ALLOW_EXTENSIONS": "yes"}, [], "WEBUI_ALLOW_EXTENSIONS=yes is not 0 or 1"),
        ({"WEBUI_ALLOW_EXTENSIONS": "1"}, ["sleep", "1"], "applies to the built-in A1111"),
        ({"SDB_ROLE": "both"}, [], "SDB_ROLE=both is not one of all, webui, agent"),
    ],
)
def test_the_extension_switch_is_the_only_way_in(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    """No other flag, value or command quietly turns the installer on (or seems to)."""
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        env=clean_env(MODELS_DIR=str(a1111_models(tmp_path)), SDB_PRINT_COMMAND="1", **env),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2, done.stdout
    assert "fatal: " in done.stdout and message in done.stdout


def test_the_agent_role_runs_the_agent_alone(tmp_path: Path) -> None:
    done = run_default(tmp_path / "no-models", SDB_PRINT_COMMAND="1", SDB_ROLE="agent")
    assert done.returncode == 0, done.stdout + done.stderr  # no model check: not the WebUI
    assert done.stdout.split()[-2:] == ["-m", "agent"]
