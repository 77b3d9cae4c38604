"""Redis Sentinel for self-hosted HA: a real master, a replica and three sentinels; a
failover while a broker serves, and the broker follows the new master.

Before this, `redis+sentinel://` was no URL the broker knew (redis-py's from_url
refuses the scheme), and a broker pointed at the master itself keeps writing to
it after it is demoted, getting READONLY on every claim.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis

from fleet import StoreUnavailable, keys
from fleet.redis_client import RedisConfigError, connect_redis
from tests.redis.servers import ServerProcess, plain_server, sentinel
from tests.support.procs import wait_for

MASTER = "sdb-master"


@dataclass
class Group:
    master: ServerProcess
    replica: ServerProcess
    sentinels: list[ServerProcess]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def master_port(self) -> int:
        """The master's port as the first sentinel tells it now."""
        with sync_redis.Redis(port=self.sentinels[0].port, decode_responses=True) as s:
            return int(s.sentinel_get_master_addr_by_name(MASTER)[1])

    def role(self, server: ServerProcess) -> str:
        with sync_redis.Redis(port=server.port, decode_responses=True) as r:
            return r.info("replication")["role"]


def settled(group: Group) -> bool:
    """Every sentinel sees the replica and the two other sentinels: a failover can run."""
    for s in group.sentinels:
        with sync_redis.Redis(port=s.port, decode_responses=True) as client:
            state = client.sentinel_master(MASTER)
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                return False
    with sync_redis.Redis(port=group.replica.port, decode_responses=True) as r:
        return r.info("replication").get("master_link_status") == "up"


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    base = tmp_path_factory.mktemp("sentinel")
    master = plain_server(base / "master").start()
    replica = plain_server(base / "replica", "--replicaof", "127.0.0.1", str(master.port)).start()
    sentinels = [sentinel(base / f"s{i}", master.port, MASTER).start() for i in range(3)]
    group = Group(master, replica, sentinels)
    try:
        wait_for(
            lambda: settled(group), 30, 0.2, what="sentinels to see the replica and each other"
        )
        yield group
    finally:
        for process in [*sentinels, replica, master]:
            process.stop()


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


def whoami(base: str, user: str) -> dict | None:
    status, body = get(base + "/stub/whoami", **{"X-Forwarded-User": user})
    return json.loads(body) if status == 200 else None


async def test_the_client_finds_the_master_through_the_sentinels(group: Group) -> None:
    client = connect_redis(group.url)
    try:
        await client.set("via-sentinel", "1")
    finally:
        await client.aclose()
    with sync_redis.Redis(port=group.master_port(), decode_responses=True) as master:
        assert master.get("via-sentinel") == "1"


def test_a_broker_follows_a_failover(group: Group, brokers, tmp_path: Path) -> None:
    """ann claims before the failover, bob after it: bob's claim is written on the
    promoted replica while the old master is read-only, and ann keeps her WebUI."""
    before = group.master_port()
    broker = brokers(redis=group.url, SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    ann = wait_for(lambda: whoami(broker.url, "ann"), 30, what="ann's WebUI")

    with sync_redis.Redis(port=group.sentinels[0].port) as s:
        s.execute_command("SENTINEL", "FAILOVER", MASTER)
    wait_for(lambda: group.master_port() != before, 30, 0.1, what="the sentinels to promote")
    new, old = (group.replica, group.master) if group.master_port() == group.replica.port else (
        group.master, group.replica)  # fmt: skip
    wait_for(lambda: group.role(new) == "master" and group.role(old) == "slave", 30, 0.1,
             what="the old master to become a replica")  # fmt: skip

    bob = wait_for(lambda: whoami(broker.url, "bob"), 30, what="bob's WebUI after the failover")
    assert bob["pod"] != ann["pod"]
    with sync_redis.Redis(port=new.port, decode_responses=True) as promoted:
        assert promoted.hget(keys.claim("bob"), "pod") == bob["pod"]
    assert group.role(old) == "slave"  # so no claim could have been written there
    assert whoami(broker.url, "ann")["pod"] == ann["pod"]


async def test_sentinels_with_their_own_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sentinels behind `requirepass`: SDB_REDIS_SENTINEL_PASSWORD_FILE gets through, and
    without it the error names the sentinels, never a traceback of client reprs. Before,
    nothing could authenticate to a guarded sentinel (docs: "reached without AUTH")."""
    master = plain_server(tmp_path / "master").start()
    guarded = sentinel(tmp_path / "s", master.port, MASTER, password="sentinel-secret").start()
    url = f"redis+sentinel://127.0.0.1:{guarded.port}/{MASTER}/0"
    try:
        monkeypatch.delenv("SDB_REDIS_SENTINEL_PASSWORD_FILE", raising=False)
        client = connect_redis(url)
        try:
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{guarded.port}"):
                await client.set("guarded", "1")
        finally:
            await client.aclose()

        secret = tmp_path / "sentinel-password"
        secret.write_text("sentinel-secret\n")
        monkeypatch.setenv("SDB_REDIS_SENTINEL_PASSWORD_FILE", str(secret))
        client = connect_redis(url)
        try:
            await client.set("guarded", "1")
        finally:
            await client.aclose()
        with sync_redis.Redis(port=master.port, decode_responses=True) as direct:
            assert direct.get("guarded") == "1"

        # The setting means nothing without Sentinel: refused at start, by name.
        with pytest.raises(RedisConfigError, match="SDB_REDIS_SENTINEL_PASSWORD_FILE"):
            connect_redis(f"redis://127.0.0.1:{master.port}/0")
    finally:
        guarded.stop()
        master.stop()
