"""The Redis layout version (fleet/schema.py): a broker refuses a layout it does not know,
with one message and exit 2, and the rollout rule of docs/operations.md holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from fleet import connect_redis, keys
from fleet.schema import LAYOUT, LayoutError, ensure, finalize
from tests.support.procs import REPO, write_fleet


def serve(redis_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SDB_REDIS_URL": redis_url,
        "SDB_FLEET": str(write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out")),
        "SDB_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "-m", "broker", *(args or ("serve",))],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("stored", [str(LAYOUT + 1), "99", "v2-beta"])
def test_a_broker_refuses_a_layout_it_does_not_know(
    redis_url: str, tmp_path: Path, stored: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(keys.SCHEMA, stored)
    client.close()
    out = serve(redis_url, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.splitlines()[-1]  # after the log lines of the isolation check
    assert last.startswith("SDB_REDIS_URL: Redis holds") and "Refusing to start" in last
    assert stored in last


def test_a_broker_writes_its_layout_on_an_empty_redis_and_runs_on_it(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    brokers(fleet=write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.get(keys.SCHEMA) == str(LAYOUT)
    client.close()
    brokers(fleet=tmp_path / "fleet.yaml", data_dir=tmp_path / "second")  # N beside N


def test_the_layout_command_shows_and_finalizes(redis_url: str, tmp_path: Path) -> None:
    out = serve(redis_url, tmp_path, "layout")
    assert out.returncode == 0 and out.stdout.startswith(f"Redis layout {LAYOUT};"), out.stderr
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(keys.SCHEMA, str(LAYOUT + 1))
    client.close()
    out = serve(redis_url, tmp_path, "layout", "--finalize")  # never back down
    assert out.returncode == 2 and "newer than this broker's" in out.stderr
    assert "Traceback" not in out.stderr


async def test_rollout_rule_n_plus_1_beside_n(redis_url: str) -> None:
    """N+1 runs on N without raising it (the N brokers go on); finalizing stores N+1,
    after which N is refused; a layout older than N+1's oldest is refused."""
    redis = connect_redis(redis_url)
    try:
        n = 1
        assert await ensure(redis, layout=n, oldest=n) == n  # empty: written
        assert await ensure(redis, layout=n + 1, oldest=n) == n  # N+1 on N: runs
        assert await redis.get(keys.SCHEMA) == str(n)  # ...and leaves it N
        assert await ensure(redis, layout=n, oldest=n) == n  # so N still starts
        assert await finalize(redis, layout=n + 1, oldest=n) == (n, n + 1)
        with pytest.raises(LayoutError, match="newer than this broker's"):
            await ensure(redis, layout=n, oldest=n)
        with pytest.raises(LayoutError, match="older than this broker runs on"):
            await ensure(redis, layout=n + 3, oldest=n + 2)
    finally:
        await redis.aclose()


def test_the_cronjob_reaper_refuses_a_layout_it_does_not_know(
    redis_url: str, tmp_path: Path
) -> None:
    """The CronJob reaper (`python -m reaper --once`) writes the broker's keys too."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(keys.SCHEMA, str(LAYOUT + 1))
    client.close()
    env = {
        **os.environ,
        "SDB_REDIS_URL": redis_url,
        "SDB_FLEET": str(write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out")),
        "SDB_DATA_DIR": str(tmp_path / "data"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "reaper", "--once"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert f"Redis holds sdbroker layout {LAYOUT + 1}" in out.stdout
    assert out.stderr.splitlines()[-1].startswith("SDB_REDIS_URL: Redis holds")
