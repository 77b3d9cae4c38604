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
