"""The reverse proxy: streaming both ways, WebSocket, SSE, and what must not cross it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.procs import Broker, wait_for

MB = 1024 * 1024


@pytest.fixture
def broker(brokers) -> Broker:
    b = brokers(SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    wait_for(lambda: len(b.pod_records()) >= 1, 20, what="a pod")
    return b


def as_user(user: str = "ann", **extra: str) -> dict[str, str]:
    return {"X-Forwarded-User": user, **extra}


async def claimed(http: aiohttp.ClientSession, broker: Broker, user: str = "ann") -> dict:
    deadline = time.monotonic() + 20
    while True:
        async with http.get(broker.url + "/stub/whoami", headers=as_user(user)) as resp:
            if resp.status == 200:
                return await resp.json()
        if time.monotonic() > deadline:
            raise TimeoutError("no pod")
        await asyncio.sleep(0.2)


async def test_large_download_streams_with_bounded_memory(broker: Broker) -> None:
    size = 200 * MB
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        before = broker.rss()
        peak = before
        received = 0
        async with http.get(broker.url + f"/stub/bytes?size={size}", headers=as_user()) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 * MB):
                received += len(chunk)
                peak = max(peak, broker.rss())
                await asyncio.sleep(0)  # a slow-ish reader: back-pressure must hold
    assert received == size
    assert peak - before < 40 * MB, (
        f"broker grew by {(peak - before) / MB:.1f} MB for a 200 MB download"
    )


async def test_large_upload_streams(broker: Broker) -> None:
    size = 50 * MB
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(size // len(chunk)):
            digest.update(chunk)
            yield chunk

    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        before = broker.rss()
        async with http.post(broker.url + "/stub/upload", data=body(), headers=as_user()) as resp:
            assert resp.status == 200
            result = await resp.json()
        growth = broker.rss() - before
    assert result["bytes"] == size
    assert result["sha256"] == digest.hexdigest()
    assert growth < 40 * MB


async def test_websocket_bridged_both_ways(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        async with http.ws_connect(broker.url + "/stub/ws-echo?push=0.2", headers=as_user()) as ws:
            await ws.send_str("hello")
            await ws.send_bytes(b"\x00\x01binary")
            texts, binaries, pushed = [], [], []
            while not (texts and binaries and pushed):
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type is aiohttp.WSMsgType.BINARY:
                    binaries.append(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    (texts if "hello" in msg.data else pushed).append(msg.data)
                else:
                    pytest.fail(f"unexpected {msg.type}")
    assert any("hello" in t for t in texts)
    assert b"\x00\x01binary" in binaries[0]
    assert pushed  # a message the pod sent on its own reached the browser


async def test_sse_events_arrive_one_by_one(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        async with http.get(
            broker.url + "/stub/sse?count=4&interval=0.5", headers=as_user()
        ) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert "Content-Encoding" not in resp.headers
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
            assert b"data:" in first
            # The first event is here while the stream is still open: nothing was buffered.
            assert not resp.content.at_eof()
            rest = await resp.content.read()
    assert rest.count(b"data:") == 3


def raw_json_exchange(broker: Broker, request: str) -> tuple[bytes, bytes]:
    """Send REQUEST as written; the answer's head, and its body up to a JSON object's end."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(request.encode())
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


async def test_an_absolute_form_target_reaches_only_the_users_pod(broker: Broker) -> None:
    """`GET http://elsewhere/path` is proxied as `GET /path` to the user's own pod."""
    async with aiohttp.ClientSession() as http:
        mine = await claimed(http, broker)
    head, body = raw_json_exchange(
        broker,
        "GET http://elsewhere.example/stub/whoami?x=1 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{broker.port}\r\nX-Forwarded-User: ann\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["pod"] == mine["pod"]


async def test_hop_by_hop_spoofed_identity_and_broker_cookies_do_not_pass(broker: Broker) -> None:
    # Raw HTTP so that spellings a client library would normalise reach the broker as sent.
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
    request = (
        "GET /stub/echo-headers HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{broker.port}\r\n"
        "X-Forwarded-User: ann\r\n"
        "Connection: keep-alive, X-Private-Hop\r\n"
        "X-Private-Hop: secret\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        "Cookie: sdb_session=stolen; sdb_csrf=x; theirs=1\r\n"
        "X-Custom: kept\r\n"
        "\r\n"
    )
    # From loopback the peer is a trusted proxy, so spoofing must be tested from a
    # connection whose identity header is the only trusted one: send spoofed
    # spellings in a second request from an untrusted broker (below) as well.
    head, body = raw_json_exchange(broker, request)
    assert head.startswith(b"HTTP/1.1 200")
    seen = {k.lower(): v for k, v in json.loads(body).items()}
    for hop in ("x-private-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in seen
    assert seen["x-custom"] == "kept"
    assert seen["cookie"] == "theirs=1"
    assert seen["x-forwarded-user"] == "ann"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["host"] == f"127.0.0.1:{broker.port}"


SPOOFS = [
    "X-Forwarded-User",
    "x-forwarded-user",
    "X_Forwarded_User",
    "X-Forwarded-Email",
    "X_FORWARDED_EMAIL",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "x_auth_request_preferred_username",
    "X-Goog-Authenticated-User-Email",
    "X-Goog-Authenticated-User-Id",
    "Remote-User",
]


@pytest.mark.parametrize("header", SPOOFS)
def test_spoofed_identity_headers_are_dropped_in_dev_mode(brokers, header: str) -> None:
    """In dev mode no client header names anyone: the session cookie does."""
    broker = brokers(SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a pod")

    async def run() -> dict:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(broker.url + "/_broker/login") as resp:
                page = await resp.text()
            token = page.split('name="csrf_token" value="')[1].split('"')[0]
            async with http.post(
                broker.url + "/_broker/login",
                data={"csrf_token": token, "user": "ann", "next": "/"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302
            raw_headers = {header: "mallory@evil.example"}
            deadline = time.monotonic() + 20
            while True:
                async with http.get(broker.url + "/stub/echo-headers", headers=raw_headers) as resp:
                    if resp.status == 200:
                        return {
                            k.lower().replace("_", "-"): v for k, v in (await resp.json()).items()
                        }
                if time.monotonic() > deadline:
                    raise TimeoutError
                await asyncio.sleep(0.2)

    seen = asyncio.run(run())
    assert seen["x-forwarded-user"] == "ann"
    assert "mallory@evil.example" not in json.dumps(seen)
    assert not any(k.startswith(("x-auth-request-", "x-goog-")) or k == "remote-user" for k in seen)
    assert "sdb_session" not in seen.get("cookie", "")


def test_header_mode_refuses_untrusted_peers(brokers) -> None:
    broker = brokers(SDB_AUTH="header", SDB_TRUSTED_PROXIES="10.9.9.9/32")

    async def run() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(broker.url + "/stub/whoami", headers=as_user("admin")) as resp,
        ):
            return resp.status, await resp.text()

    status, body = asyncio.run(run())
    assert status == 401
    assert "pod" not in body
