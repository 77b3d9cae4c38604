"""reclaim_when_gone end to end: real brokers, a real Redis, real stub WebUIs.

The fleet keeps idle sessions for a minute but ends them 2 s after the last
tab closed; brokers reap every 0.5 s and beat every 0.2 s, so a session that
ends here within seconds ended because its tab went, never for idleness.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from broker.presence import STREAMS_PER_USER
from fleet import FleetStore, connect_redis, keys
from tests.support.procs import STUB, Broker

from .conftest import until
from .test_broker import HTML, claim_gone, open_webui

FLEET = """\
backend: local
idle_timeout: 60s
outputs: {outputs}
profiles:
  - name: default
    buffer: 1
    max: 3
    probe: a1111
    reclaim_when_gone: 2s
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "{delay}"]
      stop_grace: 3s
"""
FAST = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_REAP_INTERVAL": "0.5s",
    "SDB_ACTIVITY_FLUSH": "0.2s",
}
HELD = 5.0  # seconds a tab stays open in these tests: 2.5 x reclaim_when_gone


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


def fleet_file(tmp_path: Path, *, delay: float = 0.3) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(outputs=tmp_path / "outputs", stub=STUB, delay=delay))
    return path


async def reasons(redis: Redis) -> list[str]:
    return [fields["reason"] for _, fields in await redis.xrange(keys.AUDIT)]


async def tabs(redis: Redis, user: str) -> int:
    return await FleetStore(redis).tabs_open(user)


async def test_a_websocket_tab_keeps_the_session_and_closing_it_ends_it_as_gone(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    broker = brokers(fleet=fleet_file(tmp_path), **FAST)
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "ann"}) as http:
        pod = await open_webui(http, broker)
        async with http.ws_connect(broker.url + "/stub/ws-echo") as ws:  # ComfyUI's /ws
            await until(lambda: tabs(redis, "ann"), 10)
            await asyncio.sleep(HELD)  # no activity meanwhile: the open tab alone keeps it
            assert await redis.hget(keys.claim("ann"), "pod") == pod
            assert await reasons(redis) == []
            await ws.close()
        await until(claim_gone(redis, "ann"), 30)
        await until(lambda: redis.xlen(keys.AUDIT), 10)
        assert await reasons(redis) == ["gone"]

        # Coming back, the person reads why, and that the outputs are kept.
        async with http.get(broker.url + "/", headers=HTML) as resp:
            page = await resp.text()
        assert "no tab had shown your WebUI" in page and "Your outputs are kept." in page


async def test_a_generation_in_progress_is_not_cut_when_the_tab_is_gone(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    broker = brokers(fleet=fleet_file(tmp_path, delay=6.0), **FAST)  # 3 x reclaim_when_gone
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "bob"}) as http:
        pod = await open_webui(http, broker)
        async with http.ws_connect(broker.url + "/stub/ws-echo"):
            await until(lambda: tabs(redis, "bob"), 10)
        await until(lambda: redis.zscore(keys.GONE, "bob"), 10)
        body = {"prompt": "a lighthouse", "steps": 5}
        async with http.post(broker.url + "/sdapi/v1/txt2img", json=body) as resp:
            # The reaper looked while it ran (the gone path probed it busy) and kept it.
            await until(lambda: redis.hexists(keys.BUSY, "bob"), 30)
            assert resp.status == 200
            assert len((await resp.json())["images"]) == 1
        assert await redis.hget(keys.claim("bob"), "pod") == pod
        assert await reasons(redis) == []
        await until(claim_gone(redis, "bob"), 30)  # gone once the work is done
        await until(lambda: redis.xlen(keys.AUDIT), 10)
        assert await reasons(redis) == ["gone"]


async def test_a_tab_on_broker_a_keeps_the_session_reaped_beside_b_until_a_is_killed(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    """Two brokers on one Redis: B reaps, A holds the home page's presence stream. A's
    counts keep the session; killed, A beats no more, its counts lapse and B ends it."""
    fleet = fleet_file(tmp_path)
    b = brokers(fleet=fleet, **FAST)
    a = brokers(fleet=fleet, **{**FAST, "SDB_REAP_INTERVAL": "0"})
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "cat"}) as http:
        pod = await open_webui(http, b)
        async with http.get(a.url + "/_broker/", headers=HTML) as resp:
            home = await resp.text()
        presence = re.search(r"new EventSource\(\"([^\"]+)\"\)", home)
        assert presence is not None, "the home page holds the presence stream"
        stream = await http.get(a.url + presence[1], timeout=aiohttp.ClientTimeout(total=None))
        try:
            assert stream.headers["Content-Type"] == "text/event-stream"
            await until(lambda: tabs(redis, "cat"), 10)
            await asyncio.sleep(HELD)
            assert await redis.hget(keys.claim("cat"), "pod") == pod
            assert await reasons(redis) == []
            a.kill()
            await until(claim_gone(redis, "cat"), 30)
        finally:
            stream.close()
        await until(lambda: redis.xlen(keys.AUDIT), 10)
        assert await reasons(redis) == ["gone"]


async def test_the_presence_stream_asks_who_you_are_and_how_many_you_hold(
    brokers: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = brokers(fleet=fleet_file(tmp_path), **FAST)
    url = broker.url + "/_broker/presence"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 401
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "eve"}) as http:
        held = [await http.get(url) for _ in range(STREAMS_PER_USER)]
        try:
            assert {r.status for r in held} == {200}
            async with http.get(url, headers=HTML) as resp:
                assert resp.status == 429 and "Too many open pages" in await resp.text()
        finally:
            for r in held:
                r.close()
