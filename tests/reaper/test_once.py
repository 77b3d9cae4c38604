"""CronJob mode: `python -m reaper --once` and `sdbroker reap --once` as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from fleet import Claim, FleetStore, connect_redis, keys, make_probe
from tests.support.procs import REPO, STUB, free_port

from .conftest import FakeClock, until

FLEET = """\
backend: local
idle_timeout: 60s
outputs: {outputs}
profiles:
  - name: default
    max: 10
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}"]
"""


@pytest.fixture
def stub_addr(tmp_path: Path) -> Iterator[str]:
    """One real stub WebUI, standing in for every claimed pod (it answers "not busy")."""
    port = free_port()
    cmd = [sys.executable, str(STUB), "--port", str(port), "--pod-id", "stub"]
    with (tmp_path / "stub.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    yield FleetStore(redis)
    await redis.aclose()


async def idle_sessions(store: FleetStore, addr: str, users: list[str]) -> None:
    """Sessions claimed and last active ten minutes ago (the clock is the store's)."""
    clock = FakeClock()
    clock.advance(-600)
    old = FleetStore(store.redis, clock=clock)
    await old.mark_built()
    async with aiohttp.ClientSession() as http:
        await until(lambda: make_probe("a1111").ready(http, addr))
    for i, user in enumerate(users):
        pod = f"default-{i:04d}"
        assert await old.add_pod(pod, "default", 100)
        assert await old.mark_ready(pod, "default", addr)
        assert isinstance(await old.claim(user, "default", queue_grace=60), Claim)


def reap(tmp_path: Path, redis_url: str | None, *args: str, **env: str) -> tuple[int, dict, str]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out", stub=STUB))
    full = {
        **os.environ,
        "SDB_FLEET": str(fleet),
        "SDB_DATA_DIR": str(tmp_path / "data"),
        "SDB_ACTIVITY_FLUSH": "0.1s",
        **env,
    }
    full.pop("SDB_REDIS_URL", None)
    if redis_url:
        full["SDB_REDIS_URL"] = redis_url
    cmd = [sys.executable, "-m", "reaper", *args]
    done = subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True, timeout=60)
    lines = done.stdout.strip().splitlines()
    assert len(lines) <= 1, done.stdout
    return done.returncode, json.loads(lines[0]) if lines else {}, done.stderr


async def test_once_prints_one_json_line_and_exits_0(
    tmp_path: Path, redis_url: str, store: FleetStore, stub_addr: str
) -> None:
    code, out, err = await asyncio.to_thread(reap, tmp_path, redis_url, "--once")
    assert code == 0, err
    assert out["checked"] == 0 and out["reclaimed"] == 0 and out["errors"] == 0
    assert set(out) >= {"checked", "idle", "busy", "reclaimed", "errors", "seconds"}

    await idle_sessions(store, stub_addr, ["ann", "bob"])
    code, out, err = await asyncio.to_thread(reap, tmp_path, redis_url, "--once", "--dry-run")
    assert code == 0, err
    assert out["dry_run"] and out["idle"] == 2 and out["reclaimed"] == 0
    assert sorted(e["user"] for e in out["ended"]) == ["ann", "bob"]
    assert await store.lookup("ann") is not None  # a dry run changes nothing

    code, out, err = await asyncio.to_thread(reap, tmp_path, redis_url, "--once")
    assert code == 0, err
    assert out["reclaimed"] == 2 and out["reasons"] == {"idle": 2}
    assert await store.lookup("ann") is None
    assert await store.redis.xlen(keys.AUDIT) == 2


async def test_two_cronjobs_at_once_reclaim_each_session_once(
    tmp_path: Path, redis_url: str, store: FleetStore, stub_addr: str
) -> None:
    users = [f"user{i}" for i in range(6)]
    await idle_sessions(store, stub_addr, users)
    runs = await asyncio.gather(
        *(asyncio.to_thread(reap, tmp_path, redis_url, "--once") for _ in range(2))
    )
    assert [code for code, _, _ in runs] == [0, 0], [err for _, _, err in runs]
    assert sum(out["reclaimed"] for _, out, _ in runs) == len(users)
    assert await store.redis.xlen(keys.AUDIT) == len(users)


def test_unreachable_redis_exits_1(tmp_path: Path) -> None:
    code, out, _ = reap(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "--once")
    assert code == 1
    assert "Redis unreachable" in out["error"] and out["reclaimed"] == 0


def test_no_redis_url_and_no_embedded_socket_exits_1(tmp_path: Path) -> None:
    code, out, _ = reap(tmp_path, None, "--once")
    assert code == 1 and "embedded Redis socket" in out["error"]


def test_usage_errors_exit_2(tmp_path: Path, redis_url: str) -> None:
    code, out, err = reap(tmp_path, redis_url)
    assert (code, out) == (2, {}) and "--once is required" in err
    code, out, err = reap(tmp_path, redis_url, "--once", SDB_FLEET=str(tmp_path / "nope.yaml"))
    assert (code, out) == (2, {}) and "cannot read" in err
    code, out, err = reap(tmp_path, redis_url, "--once", SDB_REAP_MISSED_PROBES="0")
    assert (code, out) == (2, {}) and "SDB_REAP_MISSED_PROBES" in err


def test_sdbroker_reap_is_the_same_command(tmp_path: Path, redis_url: str) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out", stub=STUB))
    env = {**os.environ, "SDB_FLEET": str(fleet), "SDB_REDIS_URL": redis_url}
    cmd = [sys.executable, "-m", "broker", "reap", "--once", "--dry-run"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["dry_run"] is True and out["reclaimed"] == 0
