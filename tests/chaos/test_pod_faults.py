"""Pods that die mid-request, hang, or trickle: clear errors, fresh pods, others unaffected."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis

from fleet import keys
from tests.chaos.support import HEADER_AUTH, MB, as_user, pod_of, slow_fleet, whoami
from tests.support.procs import Broker, write_fleet

INTERVAL = 1.0  # SDB_CONTROLLER_INTERVAL: the controller probes pods this often

pytestmark = pytest.mark.slow


def kill_pod(broker: Broker, pod: str) -> None:
    pid = next(int(r["pid"]) for r in broker.pod_records() if r["id"] == pod)
    os.killpg(os.getpgid(pid), signal.SIGKILL)


async def test_pod_killed_mid_download_and_mid_stream(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=2, max=4)
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL=f"{INTERVAL}s", **HEADER_AUTH)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    async with aiohttp.ClientSession() as http:
        ann, bob = await pod_of(http, broker.url, "ann"), await pod_of(http, broker.url, "bob")
        size = 512 * MB
        got, events = 0, []
        async with (
            http.get(broker.url + f"/stub/bytes?size={size}", headers=as_user("ann")) as download,
            http.get(
                broker.url + "/stub/sse?count=100&interval=0.1", headers=as_user("bob")
            ) as sse,
        ):
            assert download.status == 200 and sse.status == 200
            while got < 4 * MB:
                got += len(await download.content.read(1 * MB))
            events.append(await sse.content.readline())
            kill_pod(broker, ann)
            kill_pod(broker, bob)
            killed_at = time.monotonic()
            with pytest.raises(
                aiohttp.ClientPayloadError
            ):  # truncated, never a short "complete" body
                async for chunk in download.content.iter_any():
                    got += len(chunk)
            with pytest.raises(aiohttp.ClientPayloadError):  # the chunked stream never ends cleanly
                async for line in sse.content:
                    events.append(line)
        assert got < size
        ticks = [e for e in events if e.startswith(b"event: tick")]
        assert len(ticks) < 100, "the SSE stream of a dead pod looked complete"

        # The controller ends both claims within one probe interval (plus one pass).
        while (
            client.hget(keys.claim("ann"), "pod") == ann
            or client.hget(keys.claim("bob"), "pod") == bob
        ):
            assert time.monotonic() - killed_at < 2 * INTERVAL + 2, (
                "claim of a dead pod outlived the probe"
            )
            await asyncio.sleep(0.05)

        # Retrying: a clear page at most, then a fresh pod.
        for user, dead in (("ann", ann), ("bob", bob)):
            status, body = await whoami(http, broker.url, user)
            if status != 200:
                assert status in (502, 503), (status, body)
            fresh = await pod_of(http, broker.url, user)
            assert fresh != dead
        assert client.hget(keys.claim("ann"), "pod") != client.hget(keys.claim("bob"), "pod")
    client.close()


async def test_dead_pod_gets_a_502_page_before_the_controller_notices(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL="1h", **HEADER_AUTH)
    async with aiohttp.ClientSession() as http:
        dead = await pod_of(http, broker.url, "ann")
        kill_pod(broker, dead)
        async with http.get(broker.url + "/", headers=as_user("ann", Accept="text/html")) as resp:
            assert resp.status == 502
            page = await resp.text()
        assert "Your WebUI stopped" in page and "Traceback" not in page
        assert await pod_of(http, broker.url, "ann") != dead


async def test_hanging_and_trickling_upstreams_time_out_and_spare_others(
    brokers, tmp_path: Path
) -> None:
    fleet = slow_fleet(tmp_path / "fleet.yaml", tmp_path / "out", buffer=3, max=5)
    broker = brokers(fleet=fleet, SDB_PROXY_READ_TIMEOUT="2s", **HEADER_AUTH)
    async with aiohttp.ClientSession() as http:

        async def get(user: str, path: str) -> tuple[int, bytes, float]:
            started = time.monotonic()
            async with http.get(broker.url + path, headers=as_user(user)) as resp:
                return resp.status, await resp.read(), time.monotonic() - started

        async def ready(user: str) -> str:
            for _ in range(200):
                status, body, _ = await get(user, "/whoami")
                if status == 200:
                    return body.decode()
                await asyncio.sleep(0.1)
            raise TimeoutError(user)

        await asyncio.gather(ready("ann"), ready("bob"), ready("cy"))
        baseline = max([(await get("cy", "/whoami"))[2] for _ in range(10)])

        async def bystander(stop: asyncio.Event) -> list[float]:
            took = []
            while not stop.is_set():
                status, _, seconds = await get("cy", "/whoami")
                assert status == 200
                took.append(seconds)
                await asyncio.sleep(0.05)
            return took

        stop = asyncio.Event()
        watch = asyncio.create_task(bystander(stop))
        hang, trickle = await asyncio.gather(get("ann", "/hang"), get("bob", "/trickle?every=3"))
        stop.set()
        took = await watch

    assert hang[0] == 504 and 1.5 < hang[2] < 10, hang
    assert trickle[0] == 504 and 1.5 < trickle[2] < 10, trickle
    assert len(took) > 10
    # Others keep answering promptly meanwhile: compared with their own baseline, generously.
    assert max(took) < max(10 * baseline, 1.0), (baseline, max(took))


async def test_a_slow_but_steady_trickle_streams_through(brokers, tmp_path: Path) -> None:
    """Bytes arriving faster than the read timeout keep the request alive (SSE-like)."""
    fleet = slow_fleet(tmp_path / "fleet.yaml", tmp_path / "out", buffer=1, max=2)
    broker = brokers(fleet=fleet, SDB_PROXY_READ_TIMEOUT="2s", **HEADER_AUTH)
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(broker.url + "/whoami", headers=as_user("ann")) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        started = time.monotonic()
        async with http.get(
            broker.url + "/trickle?every=1&count=4", headers=as_user("ann")
        ) as resp:
            assert resp.status == 200
            body = await resp.read()
        assert body == b"...."
        assert time.monotonic() - started > 3  # really trickled, longer than the read timeout
