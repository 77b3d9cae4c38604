"""Pods that die mid-request, hang, or trickle: clear errors, fresh pods, others unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis

from fleet import keys
from tests.admin.support import field
from tests.chaos.support import HEADER_AUTH, MB, as_user, pod_of, slow_fleet, until, whoami
from tests.support.procs import Broker, write_fleet

INTERVAL = 1.0  # SDB_CONTROLLER_INTERVAL: the controller probes pods this often

pytestmark = pytest.mark.slow


def kill_pod(broker: Broker, pod: str) -> None:
    pid = next(int(r["pid"]) for r in broker.pod_records() if r["id"] == pod)
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies on 127.0.0.1 (the ended page's CSRF cookie)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def start_new(http: aiohttp.ClientSession, base: str, user: str) -> str:
    """After a session ended: the page load shows why, its button starts a new WebUI."""
    async with http.get(base + "/", headers=as_user(user, Accept="text/html")) as resp:
        page = await resp.text()
    assert "Start a new WebUI" in page, page
    form = {"csrf_token": field(page, "csrf_token"), "next": "/"}
    async with http.post(
        base + "/_broker/start", data=form, headers=as_user(user), allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    return await pod_of(http, base, user)


async def test_pod_killed_mid_download_and_mid_stream(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=2, max=4)
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL=f"{INTERVAL}s", **HEADER_AUTH)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    async with browser() as http:
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

        # Retrying in the background: told the session ended; a page load starts a new one.
        for user, dead in (("ann", ann), ("bob", bob)):
            status, body = await whoami(http, broker.url, user)
            assert status == 409, (status, body)
            fresh = await start_new(http, broker.url, user)
            assert fresh != dead
        assert client.hget(keys.claim("ann"), "pod") != client.hget(keys.claim("bob"), "pod")
    client.close()


async def test_dead_pod_gets_a_502_page_before_the_controller_notices(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL="1h", **HEADER_AUTH)
    async with browser() as http:
        dead = await pod_of(http, broker.url, "ann")
        kill_pod(broker, dead)
        async with http.get(broker.url + "/", headers=as_user("ann", Accept="text/html")) as resp:
            assert resp.status == 502
            page = await resp.text()
        # The claim ended with the 502: the page is the ended page, with its Start button.
        assert "Your WebUI stopped" in page and "Start a new WebUI" in page
        assert "Traceback" not in page
        assert await start_new(http, broker.url, "ann") != dead


@pytest.mark.parametrize("first", ["controller", "proxy"])
async def test_a_killed_pod_leaves_a_notice_so_polling_claims_no_new_pod(
    brokers, redis_url: str, tmp_path: Path, first: str
) -> None:
    """Issue 17 item 3: kill -9 of a claimed pod while its tab polls /internal/progress.

    Before, the controller (or the proxy, when the poll found the pod dead first)
    ended the claim with an audit entry but no notice, so the next polls were
    answered 200 by a brand-new pod claimed unseen. Now each leaves the notice:
    the polls get 409, nothing is claimed, and the page load shows why.
    """
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    interval = f"{INTERVAL}s" if first == "controller" else "1h"
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL=interval, **HEADER_AUTH)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    poll = {"id_task": "task(x)", "id_live_preview": -1}
    async with aiohttp.ClientSession() as http:

        async def progress() -> int:
            async with http.post(
                broker.url + "/internal/progress", json=poll, headers=as_user("ann")
            ) as resp:
                return resp.status

        async def dead_or_told() -> int | None:
            status = await progress()
            assert status in (502, 409), status  # never a new pod's 200
            return None if status == 502 else status

        dead = await pod_of(http, broker.url, "ann")
        assert await progress() == 200
        kill_pod(broker, dead)
        if first == "controller":

            async def claim_gone() -> bool:
                return not client.exists(keys.claim("ann"))

            await until(claim_gone, what="the controller's pass ending the claim")
        else:  # the polls find it dead: 502 until one sees the process gone and ends the claim
            assert await until(dead_or_told, what="a poll ending the claim") == 409
        statuses = [await progress() for _ in range(3)]
        assert statuses == [409] * 3
        assert not client.exists(keys.claim("ann"))  # no new pod claimed behind the user's back
        notice = json.loads(client.get(keys.ended("ann")))
        assert notice["reason"] == "dead" and notice["pod"] == dead
        assert "log" not in json.dumps(notice)  # the pod's log path is for admins only
        [event] = [e for _, e in client.xrange(keys.AUDIT) if e.get("pod") == dead]
        # The proxy's variant: the controller, woken by the process's exit (the local
        # backend's doorbell), may end it first; either way the notice is there.
        assert event["reason"] == "dead" and event["by"] in (first, "controller")

        async with http.get(broker.url + "/", headers=as_user("ann", Accept="text/html")) as resp:
            page = await resp.text()
        assert "Your WebUI stopped" in page and "Traceback" not in page
        assert not client.exists(keys.claim("ann"))  # showing the page claims nothing either
    client.close()


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
