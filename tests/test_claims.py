"""No double allocation: two broker processes on one Redis, concurrent first requests."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import aiohttp
import pytest
import redis

from fleet import keys
from tests.support.procs import wait_for, write_fleet

USERS = 100
REQUESTS = 300

pytestmark = pytest.mark.slow


def ready_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(keys.ready("default")))
    finally:
        client.close()


async def whoami(http: aiohttp.ClientSession, base: str, user: str) -> tuple[str, int, dict]:
    async with http.get(base + "/stub/whoami", headers={"X-Forwarded-User": user}) as resp:
        return user, resp.status, await resp.json(content_type=None)


def test_concurrent_first_requests_over_two_brokers(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(
        tmp_path / "fleet.yaml", outputs=tmp_path / "outputs", buffer=USERS, max=USERS
    )
    env = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}
    first = brokers(fleet=fleet, **env)
    second = brokers(fleet=fleet, **env)
    wait_for(lambda: ready_count(redis_url) >= USERS, 120, interval=0.5, what=f"{USERS} warm pods")

    users = [f"user-{i:03d}@example.com" for i in range(USERS)]
    plan = list(itertools.islice(itertools.cycle(users), REQUESTS))

    async def burst() -> list[tuple[str, int, dict]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            bases = itertools.cycle([first.url, second.url])
            return await asyncio.gather(*(whoami(http, next(bases), u) for u in plan))

    answers = asyncio.run(burst())
    assert all(status == 200 for _, status, _ in answers), [a for a in answers if a[1] != 200][:3]
    pods_of: dict[str, set[str]] = {}
    users_of: dict[str, set[str]] = {}
    for user, _, body in answers:
        assert body["user"] == user  # the pod was told who it serves, and it is this user
        pods_of.setdefault(user, set()).add(body["pod"])
        users_of.setdefault(body["pod"], set()).add(user)
    assert all(len(p) == 1 for p in pods_of.values()), "a user was served by two pods"
    assert all(len(u) == 1 for u in users_of.values()), "a pod served two users"
    assert len(pods_of) == USERS

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        claims = {u: client.hget(keys.claim(u), "pod") for u in users}
        assert all(claims.values())
        assert len(set(claims.values())) == USERS
        assert claims == {u: next(iter(p)) for u, p in pods_of.items()}
        for user, pod in claims.items():
            assert client.hget(keys.pod(pod), "user") == user
    finally:
        client.close()
