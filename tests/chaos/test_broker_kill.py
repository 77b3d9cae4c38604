"""Kill -9 one of two brokers while 50 users stream WebSocket and HTTP traffic."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
import redis

from fleet import keys
from tests.chaos.support import HEADER_AUTH, as_user, pod_of
from tests.support.procs import Broker, wait_for, write_fleet

USERS = 50
TRAFFIC_SECONDS = 10.0
KILL_AT = 3.0

pytestmark = pytest.mark.slow


def ready_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.zcard(keys.ready("default"))
    finally:
        client.close()


class Ledger:
    """Every answer's pod per user, and what went wrong, for the assertions at the end."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}
        self.wrong: list[tuple[str, str, str]] = []  # (user, pod answered, user's pod)
        self.after_kill: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.answers = 0

    def saw(self, user: str, pod: str, killed: bool) -> None:
        self.answers += 1
        if pod != self.first[user]:
            self.wrong.append((user, pod, self.first[user]))
        if killed:
            self.after_kill[user] += 1


async def one_user(
    http: aiohttp.ClientSession, user: str, urls: list[str], ledger: Ledger, killed: asyncio.Event,
    stop: float,
) -> None:  # fmt: skip
    """WebSocket pushes and echoes plus plain GETs; on any failure, reconnect to the next broker."""
    n = 0
    while time.monotonic() < stop:
        base = urls[n % len(urls)]
        try:
            async with http.ws_connect(
                base + "/stub/ws-echo?push=0.5",
                headers=as_user(user),
                timeout=aiohttp.ClientWSTimeout(ws_close=2),
            ) as ws:
                while time.monotonic() < stop:
                    await ws.send_str(f"{user}:{n}")
                    while True:  # pushes may come before the echo
                        msg = await asyncio.wait_for(ws.receive(), 5)
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            raise aiohttp.ClientError(f"websocket ended: {msg.type}")
                        if msg.data.startswith("{"):
                            ledger.saw(user, json.loads(msg.data)["pod"], killed.is_set())
                            continue
                        assert msg.data == f"{user}:{n}", f"{user} got someone's echo {msg.data!r}"
                        break
                    async with http.get(base + "/stub/whoami", headers=as_user(user)) as resp:
                        if resp.status != 200:
                            raise aiohttp.ClientError(f"whoami answered {resp.status}")
                        ledger.saw(user, (await resp.json())["pod"], killed.is_set())
                    n += 2  # same broker next round
                    await asyncio.sleep(0.4)
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            ledger.errors[user] += 1
            n += 1  # the other broker
            await asyncio.sleep(0.2)


async def test_killed_broker_other_keeps_serving_everyone_on_their_own_pod(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(
        tmp_path / "fleet.yaml", outputs=tmp_path / "out", min=USERS, buffer=0, max=USERS
    )
    doomed: Broker = brokers(fleet=fleet, **HEADER_AUTH)
    survivor: Broker = brokers(fleet=fleet, **HEADER_AUTH)
    wait_for(lambda: ready_count(redis_url) >= USERS, 90, interval=0.5, what=f"{USERS} warm pods")
    users = [f"user-{i:02d}" for i in range(USERS)]
    ledger = Ledger()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        home = {u: [doomed.url, survivor.url] if i % 2 == 0 else [survivor.url, doomed.url]
                for i, u in enumerate(users)}  # fmt: skip
        pods = await asyncio.gather(*(pod_of(http, home[u][0], u) for u in users))
        ledger.first = dict(zip(users, pods, strict=True))
        assert len(set(pods)) == USERS, "two users share a pod"

        killed = asyncio.Event()
        stop = time.monotonic() + TRAFFIC_SECONDS
        traffic = [
            asyncio.create_task(one_user(http, u, home[u], ledger, killed, stop)) for u in users
        ]
        await asyncio.sleep(KILL_AT)
        doomed.kill()
        killed.set()
        await asyncio.gather(*traffic)

        # Everyone, including the killed broker's users, is served by the survivor now.
        after = await asyncio.gather(*(pod_of(http, survivor.url, u, timeout=10) for u in users))
    assert ledger.wrong == [], f"answers from another user's pod: {ledger.wrong[:5]}"
    assert dict(zip(users, after, strict=True)) == ledger.first
    silent = [u for u in users if ledger.after_kill[u] == 0]
    assert silent == [], f"never served after the kill: {silent}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        claims = {u: client.hget(keys.claim(u), "pod") for u in users}
    finally:
        client.close()
    assert claims == ledger.first, "a claim was lost or moved"
    assert survivor.proc is not None and survivor.proc.poll() is None
