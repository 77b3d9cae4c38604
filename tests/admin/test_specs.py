"""`sdbroker fleet diff|apply|status` and hot reload: every broker swaps in an applied spec
without a restart; an invalid spec is refused and the running fleet is left untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file
from tests.support.procs import REPO


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_apply_hot_reloads_every_broker_and_refuses_invalid_specs(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    outputs = tmp_path / "outputs"
    small = fleet_file(tmp_path / "fleet.yaml", outputs, {"buffer": 1, "max": 2})
    bigger = fleet_file(tmp_path / "bigger.yaml", outputs, {"buffer": 2, "max": 3})
    broken = fleet_file(tmp_path / "broken.yaml", outputs, {"min": 5, "max": 3})
    env = {"SDB_REDIS_URL": redis_url, "SDB_FLEET": str(small), "SDB_DATA_DIR": str(tmp_path)}
    first = brokers(fleet=small, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    second = brokers(fleet=small, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root = Person(first.url)
    try:
        await root.login("root")
        token, _ = await root.admin_token()
        apis = [Api(root.http, b.url, token) for b in (first, second)]

        status = cli("fleet", "status", env=env)
        assert status.returncode == 0, status.stderr
        header, row = status.stdout.splitlines()[:2]
        assert header.split()[:5] == ["PROFILE", "WARMING", "READY", "CLAIMED", "QUEUE"]
        assert row.split()[0] == "default" and "0/1/2" in row and "file" in row

        diff = cli("fleet", "diff", str(bigger), env=env)
        assert diff.returncode == 1, diff.stderr
        assert "profile default: buffer 1 -> 2" in diff.stdout
        assert "profile default: max 2 -> 3" in diff.stdout
        assert "-    buffer: 1" in diff.stdout and "+    buffer: 2" in diff.stdout

        applied = cli("fleet", "apply", str(bigger), env=env)
        assert applied.returncode == 0, applied.stderr
        assert "2 broker(s)" in applied.stdout

        async def file_sizes(api: Api) -> dict[str, int | str]:
            return (await api.call("GET", "/fleet"))[1][0]["file"]

        async def both_swapped() -> bool:
            sizes = [await file_sizes(a) for a in apis]
            return all(s == {"min": 0, "buffer": 2, "max": 3} for s in sizes)

        await eventually(both_swapped, what="both brokers on the applied spec")
        await eventually(
            lambda: _ready(apis[0], 2), what="the fleet grown to the new buffer without a restart"
        )
        assert cli("fleet", "diff", str(bigger), env=env).returncode == 0

        # An invalid file is refused by the CLI: Redis and the fleet are untouched.
        refused = cli("fleet", "apply", str(broken), env=env)
        assert refused.returncode == 2
        assert "min (5) is greater than max (3)" in refused.stderr and "refused" in refused.stderr
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        assert client.get(keys.SPEC) == bigger.read_text()

        # Invalid text that reaches Redis anyway is refused by every broker, which keep running.
        client.set(keys.SPEC, "backend: local\nprofiles: []\n")
        client.hset(keys.SPEC_META, mapping={"sha": "not-valid", "source": "apply"})
        client.publish(keys.EVENTS, "spec not-valid")
        for broker in (first, second):
            await eventually(
                lambda b=broker: _logged(b, "refused the applied fleet spec"),
                what="the invalid spec refused",
            )
        for api in apis:
            assert await file_sizes(api) == {"min": 0, "buffer": 2, "max": 3}
        assert await _ready(apis[1], 2)
        status = cli("fleet", "status", env=env)  # the stored spec is broken: the file is shown
        assert status.returncode == 0 and "default" in status.stdout

        # A broker (re)started with the old file runs what an admin applied, not the file.
        assert cli("fleet", "apply", str(bigger), env=env).returncode == 0
        client.close()
        third = brokers(fleet=small, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
        assert await file_sizes(Api(root.http, third.url, token)) == {
            "min": 0,
            "buffer": 2,
            "max": 3,
        }
        assert "not SDB_FLEET" in third.log_text()
    finally:
        await root.close()


async def _ready(api: Api, count: int) -> bool:
    return (await api.call("GET", "/fleet"))[1][0]["ready"] == count


async def _logged(broker, text: str) -> bool:
    return text in broker.log_text()
