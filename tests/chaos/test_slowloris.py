"""Slowloris clients and oversized headers and bodies at the broker.

Memory stays bounded, oversized input gets a 4xx, and other users keep
being served the whole time.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import aiohttp
import pytest

from broker.admin import Tokens
from broker.identity import Identity
from fleet import connect_redis
from tests.chaos.support import HEADER_AUTH, MB, as_user, pod_of
from tests.support.procs import Broker

SLOW_CLIENTS = 300
SLOW_SECONDS = 6.0

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(brokers) -> Broker:
    return brokers(**HEADER_AUTH)


async def slowloris(port: int, stop: float) -> int:
    """Open a request and send one header line a second, never finishing the headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        writer.write(b"GET /stub/whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: loris\r\n")
        while time.monotonic() < stop:
            await asyncio.sleep(1.0)
            writer.write(b"X-Slow-%d: %s\r\n" % (sent, b"a" * 100))
            await writer.drain()
            sent += 1
    except ConnectionError:
        pass
    finally:
        writer.close()
    return sent


async def test_slowloris_sockets_cost_little_and_others_are_served(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        pod = await pod_of(http, broker.url, "ann")
        before = broker.rss()
        stop = time.monotonic() + SLOW_SECONDS
        loris = [asyncio.create_task(slowloris(broker.port, stop)) for _ in range(SLOW_CLIENTS)]
        served, peak = 0, before
        while time.monotonic() < stop:
            async with http.get(
                broker.url + "/stub/whoami",
                headers=as_user("ann"),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                assert resp.status == 200 and (await resp.json())["pod"] == pod
            served += 1
            peak = max(peak, broker.rss())
            await asyncio.sleep(0.1)
        await asyncio.gather(*loris)
    assert served > SLOW_SECONDS * 3, f"only {served} answers while under slowloris"
    growth = (peak - before) / MB
    assert growth < 40, f"broker grew {growth:.1f} MB for {SLOW_CLIENTS} slow sockets"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * 64 * 1024},  # one value past the 16 KiB field limit
        {f"X-Many-{i}": "b" * 1000 for i in range(200)},  # 200 KB of headers in total
    ],
    ids=["one-huge-value", "many-headers"],
)
async def test_oversized_headers_get_a_4xx_and_others_are_unaffected(
    broker: Broker, headers: dict
) -> None:
    async with aiohttp.ClientSession() as http:
        pod = await pod_of(http, broker.url, "ann")
        before = broker.rss()
        for _ in range(20):
            try:
                async with http.get(
                    broker.url + "/stub/whoami", headers=as_user("bob", **headers)
                ) as resp:
                    status, body = resp.status, await resp.text()
                assert 400 <= status < 500 and status != 404, (status, body[:200])
                assert "Traceback" not in body
            except aiohttp.ServerDisconnectedError:
                pass  # closing the connection on an oversized header is fine too
        async with http.get(broker.url + "/stub/whoami", headers=as_user("ann")) as resp:
            assert resp.status == 200 and (await resp.json())["pod"] == pod
        assert (broker.rss() - before) / MB < 20


async def test_oversized_body_to_the_broker_itself_is_refused(brokers) -> None:
    broker = brokers(**HEADER_AUTH, SDB_ADMIN_USERS="tests")  # the token's maker is an admin
    redis = connect_redis(broker.env["SDB_REDIS_URL"])
    try:
        token = (await Tokens(redis).create("chaos", Identity("tests"), ttl=3600)).token
    finally:
        await redis.aclose()
    body = b'{"name": "' + b"x" * (70 * MB) + b'"}'
    async with aiohttp.ClientSession() as http:
        before = broker.rss()
        try:
            async with http.put(
                broker.url + "/_broker/api/v1/profiles/default/sizes",
                data=io.BytesIO(body),  # aiohttp: raw bytes this large warn (ResourceWarning)
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 413, resp.status
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            pass  # the broker may close the socket while the body is still being sent
        grew = (broker.rss() - before) / MB
        async with http.get(broker.url + "/_broker/healthz") as resp:
            assert resp.status == 200
    assert grew < 100, f"the broker held {grew:.0f} MB of a refused body"


async def test_huge_upload_through_the_proxy_streams(broker: Broker, tmp_path: Path) -> None:
    """Bodies for the WebUI are not the broker's to hold: they stream to the pod."""
    size = 128 * MB

    async def body():
        chunk = b"\0" * MB
        for _ in range(size // MB):
            yield chunk

    async with aiohttp.ClientSession() as http:
        await pod_of(http, broker.url, "ann")
        before = broker.rss()
        async with http.post(
            broker.url + "/stub/upload", data=body(), headers=as_user("ann")
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["bytes"] == size
        assert (broker.rss() - before) / MB < 40


async def test_an_upload_that_waits_for_100_continue_goes_through(broker: Broker) -> None:
    """curl and aiohttp hold a large body back until `100 Continue`: the broker must
    send it (the pod's own 100 is not the answer) and then stream the body on."""
    async with aiohttp.ClientSession() as http:
        await pod_of(http, broker.url, "ann")
        async with http.post(
            broker.url + "/stub/upload",
            data=io.BytesIO(b"q" * (3 * MB)),
            headers=as_user("ann"),
            expect100=True,
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["bytes"] == 3 * MB


async def test_a_request_head_that_never_ends_is_cut_off(brokers) -> None:
    """SDB_CLIENT_TIMEOUT bounds how long a connection may trickle its head, from connect."""
    broker = brokers(**HEADER_AUTH, SDB_CLIENT_TIMEOUT="2s")
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    started = time.monotonic()
    writer.write(b"GET /stub/whoami HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: loris\r\n")
    closed_after = None
    try:
        while time.monotonic() - started < 20:
            writer.write(b"X-Slow: %d\r\n" % int(time.monotonic()))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
    except ConnectionError:
        closed_after = time.monotonic() - started
    finally:
        writer.close()
    assert closed_after is not None, "the broker kept a 20-second request head open"
    assert closed_after < 10, f"cut after {closed_after:.1f} s with SDB_CLIENT_TIMEOUT=2s"


async def test_an_upload_the_browser_stops_sending_gets_a_408_page(brokers) -> None:
    """A body that stops for SDB_CLIENT_TIMEOUT is not waited for: a 408 page, the
    connection closed, the pod's connection cut; the same user is served meanwhile."""
    broker = brokers(**HEADER_AUTH, SDB_CLIENT_TIMEOUT="2s")
    async with aiohttp.ClientSession() as http:
        await pod_of(http, broker.url, "ann")
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        started = time.monotonic()
        writer.write(
            b"POST /stub/upload HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: ann\r\n"
            b"Accept: text/html\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000
        )
        await writer.drain()
        async with http.get(broker.url + "/stub/whoami", headers=as_user("ann")) as resp:
            assert resp.status == 200  # the stalled upload holds up nothing else
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            took = time.monotonic() - started
            # then the page, and the close (after aiohttp's 10 s lingering read at most)
            page = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"Upload stopped" in page
    assert b"Traceback" not in page
    assert b"Connection: close" in head
    assert took < 10, f"answered after {took:.1f} s with SDB_CLIENT_TIMEOUT=2s"
