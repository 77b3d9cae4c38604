"""End to end through real brokers: what keeps a session, what ends it, what the user sees.

Fleets use idle_timeout 2s and the broker reaps every 0.5s with activity
flushed every 0.2s, so "15 minutes later" takes a few seconds.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from fleet import connect_redis, keys
from tests.support.procs import Broker, write_fleet

from .conftest import until

HTML = {"Accept": "text/html,application/xhtml+xml"}
POLLS = [  # what an open, idle A1111/Forge tab keeps sending
    ("POST", "/internal/progress", {"id_task": "task(x)", "id_live_preview": -1}),
    ("GET", "/internal/ping", None),
    ("GET", "/heartbeat/abc123", None),
    ("POST", "/heartbeat/abc123", None),
    ("GET", "/sdapi/v1/progress?skip_current_image=true", None),
    ("GET", "/queue/data?session_hash=abc123", None),
]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


def start(brokers: Callable[..., Broker], tmp_path: Path, *, delay: float = 0.3) -> Broker:
    fleet = write_fleet(
        tmp_path / "fleet.yaml",
        outputs=tmp_path / "outputs",
        buffer=1,
        max=3,
        delay=delay,
        idle_timeout="2s",
    )
    return brokers(
        fleet=fleet,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_REAP_INTERVAL="0.5s",
        SDB_ACTIVITY_FLUSH="0.2s",
    )


async def open_webui(http: aiohttp.ClientSession, broker: Broker) -> str:
    """Load the page until the WebUI answers (a warm pod may still be starting); its pod id."""

    async def landed() -> bool:
        async with http.get(broker.url + "/", headers=HTML) as resp:
            return resp.status == 200 and "pod-id" in await resp.text()

    await until(landed, 30)
    return await pod_of(http, broker)


async def pod_of(http: aiohttp.ClientSession, broker: Broker) -> str:
    async with http.get(broker.url + "/stub/whoami") as resp:
        assert resp.status == 200
        return (await resp.json())["pod"]


def claim_gone(redis: Redis, user: str) -> Callable[[], asyncio.Future]:
    async def gone() -> bool:
        return not await redis.exists(keys.claim(user))

    return gone


async def test_polling_keeps_nothing_and_the_returning_user_is_told(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    broker = start(brokers, tmp_path)
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "ann"}) as http:
        first = await open_webui(http, broker)

        async def poll() -> list[int]:
            statuses = []
            for method, path, body in POLLS:
                async with http.request(method, broker.url + path, json=body) as resp:
                    statuses.append(resp.status)
            return statuses

        async def idle_tab() -> None:
            while True:
                await poll()
                await asyncio.sleep(0.2)

        tab = asyncio.create_task(idle_tab())
        try:
            await until(claim_gone(redis, "ann"), 30)
        finally:
            tab.cancel()
        # The audit entry and notice follow end_pod in a second round trip.
        await until(lambda: redis.xlen(keys.AUDIT), 10)
        [event] = [f for _, f in await redis.xrange(keys.AUDIT)]
        assert event["user"] == "ann" and event["pod"] == first and event["reason"] == "idle"

        # The open tab keeps polling: it is told the session ended and takes no new pod.
        for _ in range(3):
            assert set(await poll()) == {409}
        assert not await redis.exists(keys.claim("ann"))

        # The user comes back: the notice and a button; only the button starts a new WebUI.
        async with http.get(broker.url + "/", headers=HTML) as resp:
            page = await resp.text()
            assert resp.status == 200
            csrf = resp.cookies["sdb_csrf"].value
        assert re.search(r"Your session ended after \d+ seconds without activity", page)
        assert "Your outputs are kept." in page and "Start a new WebUI" in page
        assert not await redis.exists(keys.claim("ann"))  # reading it took nothing
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        async with http.post(
            broker.url + "/_broker/start",
            data={"csrf_token": html.unescape(token[1]), "next": "/"},
            headers={**HTML, "Cookie": f"sdb_csrf={csrf}"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"

        async def new_pod() -> bool:
            async with http.get(broker.url + "/", headers=HTML) as resp:
                return resp.status == 200 and "Your session ended" not in await resp.text()

        await until(new_pod, 30)
        assert await pod_of(http, broker) != first


async def test_browser_websocket_messages_keep_a_session_the_pods_do_not(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    broker = start(brokers, tmp_path)
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "bob"}) as http:
        pod = await open_webui(http, broker)
        async with http.ws_connect(broker.url + "/stub/ws-echo?push=0.2") as ws:
            talk_until = time.monotonic() + 5.0  # 2.5 x idle_timeout
            while time.monotonic() < talk_until:
                await ws.send_str("still here")
                await asyncio.sleep(0.3)
            assert await redis.hget(keys.claim("bob"), "pod") == pod
            # Now only the pod speaks (its pushes keep coming); the session ends.
            await until(claim_gone(redis, "bob"), 30)
        [event] = [f for _, f in await redis.xrange(keys.AUDIT)]
        assert event["user"] == "bob" and event["reason"] == "idle"


async def test_generation_longer_than_idle_timeout_is_never_cut(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    broker = start(brokers, tmp_path, delay=4.0)  # one image takes 2 x idle_timeout
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "cat"}) as http:
        pod = await open_webui(http, broker)
        body = {"prompt": "a lighthouse", "steps": 5}
        async with http.post(broker.url + "/sdapi/v1/txt2img", json=body) as resp:
            assert resp.status == 200
            assert len((await resp.json())["images"]) == 1
        assert await redis.hget(keys.claim("cat"), "pod") == pod  # kept all along
        assert await redis.xlen(keys.AUDIT) == 0
        await until(claim_gone(redis, "cat"), 30)  # idle once the work is done
        [event] = [f for _, f in await redis.xrange(keys.AUDIT)]
        assert event["pod"] == pod and event["reason"] == "idle"
