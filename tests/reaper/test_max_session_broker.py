"""max_session end to end through a real broker: a generating WebUI cannot hold its GPU
past the limit, and the returning user reads which limit ended it (issue 19, section 3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from fleet import connect_redis, keys
from tests.support.procs import Broker, write_fleet

from .conftest import until
from .test_broker import HTML, claim_gone, open_webui


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


async def test_a_generating_session_ends_at_max_session_and_the_page_says_so(
    brokers: Callable[..., Broker], tmp_path: Path, redis: Redis
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs", buffer=1, max=2,
                        delay=120.0)  # fmt: skip
    text = fleet.read_text()
    assert "idle_timeout: 15m\n" in text
    fleet.write_text(text.replace("idle_timeout: 15m\n", "idle_timeout: 15m\nmax_session: 4s\n"))
    broker = brokers(
        fleet=fleet,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_REAP_INTERVAL="0.5s",
        SDB_ACTIVITY_FLUSH="0.2s",
    )
    async with aiohttp.ClientSession(headers={"X-Forwarded-User": "ann"}) as http:
        pod = await open_webui(http, broker)
        body = {"prompt": "a lighthouse", "steps": 5}  # takes 120 s: busy all along
        generation = asyncio.create_task(http.post(broker.url + "/sdapi/v1/txt2img", json=body))
        try:
            await until(claim_gone(redis, "ann"), 30)
        finally:
            generation.cancel()
        [event] = [f for _, f in await redis.xrange(keys.AUDIT)]
        assert (event["pod"], event["reason"]) == (pod, "max_session")
        async with http.get(broker.url + "/", headers=HTML) as resp:
            page = await resp.text()
            assert resp.status == 200
        assert "Your session reached its 4-second limit" in page
        assert "Start a new WebUI" in page and "Traceback" not in page
        assert not await redis.exists(keys.claim("ann"))
