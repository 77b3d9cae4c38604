"""Redis restarted, and separately flushed, under traffic: fail closed, then rebuild.

During the gap every answer from a pod must be the user's own pod; anything
else is a 503 (the wait page while the index is rebuilt, or "temporarily
unavailable" while Redis is down), never a guess.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import redis

from fleet import keys
from tests.chaos.support import HEADER_AUTH, pod_of, until, whoami
from tests.support.procs import RedisServer, wait_for, write_fleet

USERS = [f"user-{i}" for i in range(6)]
GAP = 2.0  # seconds Redis stays down

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis-own")
    server.start()
    yield server
    server.stop()


async def hammer(http: aiohttp.ClientSession, base: str, user: str, stop: asyncio.Event,
                 seen: list[tuple[str, int, object]]) -> None:  # fmt: skip
    while not stop.is_set():
        status, body = await whoami(http, base, user)
        seen.append((user, status, body["pod"] if status == 200 else body))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["restart", "flushall"])
async def test_redis_lost_under_traffic_fails_closed_and_rebuilds_claims(
    brokers, own_redis: RedisServer, tmp_path: Path, fault: str
) -> None:
    fleet = write_fleet(
        tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=len(USERS), max=len(USERS) + 2
    )
    broker = brokers(fleet=fleet, redis=own_redis.url, SDB_ROUTE_CACHE_TTL="0.2s", **HEADER_AUTH)
    async with aiohttp.ClientSession() as http:
        first = dict(
            zip(
                USERS,
                await asyncio.gather(*(pod_of(http, broker.url, u) for u in USERS)),
                strict=True,
            )
        )
        assert len(set(first.values())) == len(USERS)

        seen: list[tuple[str, int, object]] = []
        stop = asyncio.Event()
        traffic = [asyncio.create_task(hammer(http, broker.url, u, stop, seen)) for u in USERS]
        await asyncio.sleep(0.5)
        while_down = 0
        if fault == "restart":
            own_redis.stop()
            before = len(seen)
            await asyncio.sleep(GAP)
            while_down = len(seen) - before
            own_redis.start()
        else:
            client = redis.Redis.from_url(own_redis.url)
            client.flushall()
            client.close()
        fault_at = len(seen)

        async def everyone_back() -> bool:
            recent = {u: s for u, s, _ in seen[-len(USERS) * 3 :]}
            return len(recent) == len(USERS) and all(s == 200 for s in recent.values())

        await until(everyone_back, 30, what="every user served again")
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*traffic)

    wrong = [(u, pod) for u, s, pod in seen if s == 200 and pod != first[u]]
    assert wrong == [], f"served by a pod not theirs: {wrong[:5]}"
    others = Counter(s for _, s, _ in seen if s != 200)
    assert set(others) <= {503}, f"answers other than 200/503 during the gap: {others}"
    # Requests went on while Redis was down: answered from the routes each broker
    # knows (stale while Redis is away), else 503; a restart shorter than the client's
    # retries may even go unseen (fleet.redis_client), which is the point of them.
    assert while_down > 0 or fault == "flushall", "no request was made while Redis was down"
    assert len(seen) > fault_at
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        wait_for(lambda: all(client.hget(keys.claim(u), "pod") for u in USERS), 20, what="claims")
        assert {u: client.hget(keys.claim(u), "pod") for u in USERS} == first
    finally:
        client.close()
    if fault == "restart":  # the controller waited Redis out with backoff, then went on
        assert "Redis unreachable" in broker.log.read_text(errors="replace")


async def test_restored_older_snapshot_keeps_live_sessions(
    brokers, own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis restored from a backup taken before alice's claim (as a failover to a replica
    that was behind leaves it): the index says her pod is Ready, its record says hers.
    The record wins: bob gets another pod, alice keeps hers, and it is audited."""
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=2, max=5)
    broker = brokers(fleet=fleet, redis=own_redis.url, SDB_ROUTE_CACHE_TTL="0.2s", **HEADER_AUTH)
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        wait_for(lambda: client.zcard(keys.ready("default")) == 2, 30, what="two warm pods")
        client.save()  # the backup: two Ready pods, no claim
        backup = tmp_path / "backup.rdb"
        backup.write_bytes((own_redis.dir / "dump.rdb").read_bytes())
        async with aiohttp.ClientSession() as http:
            alices = await pod_of(http, broker.url, "alice")
            wait_for(lambda: client.zcard(keys.ready("default")) == 2, 30, what="the refill")
            await asyncio.sleep(2.5)  # a full pass or two after the claim (its epoch moves on)

            own_redis.stop()
            (own_redis.dir / "dump.rdb").write_bytes(backup.read_bytes())
            own_redis.start()
            assert client.hget(keys.pod(alices), "state") == "ready"  # the index went back

            bobs = await pod_of(http, broker.url, "bob")
            assert bobs != alices, "bob was given alice's pod"
            for _ in range(10):  # alice goes on in her own WebUI, never a new one
                status, body = await whoami(http, broker.url, "alice")
                assert (status, body["pod"] if status == 200 else body) == (200, alices)
                await asyncio.sleep(0.2)
        wait_for(
            lambda: (
                client.hget(keys.pod(alices), "user") == "alice"
                and client.hget(keys.claim("alice"), "pod") == alices
            ),
            20,
            what="alice's claim in the index again",
        )
        audit = client.xrange(keys.AUDIT)
        assert any(
            f.get("reason") == "reattached" and f.get("pod") == alices and f.get("user") == "alice"
            for _, f in audit
        ), audit
        wait_for(lambda: "Redis lost writes" in broker.log_text(), 20, what="the epoch check")
    finally:
        client.close()
