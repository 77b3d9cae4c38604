"""The pods' HTTP client (broker/proxy/upstream.py) against real servers on loopback.

Two kinds of server: an aiohttp app, for ordinary answers, and a raw asyncio
server whose bytes the test writes itself, for what a library would not send
(an early answer, an interim 103, a kept-alive connection closed on the next
request).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict

from broker.proxy.upstream import BodyBrokeOff, BodyStalled, PodPool
from tests.support.procs import free_port

Headers = CIMultiDict[str]


class Pod:
    """An aiohttp pod that counts the connections it was sent requests on."""

    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.seen: list[web.Request] = []
        self.digested: list[int] = []  # the lengths of the bodies read to their end
        self.port = 0
        self.release = asyncio.Event()  # ends /hangs: set before the pod stops

    async def _track(self, request: web.Request) -> None:
        self.seen.append(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.add(peer)

    def app(self) -> web.Application:
        app = web.Application()

        async def small(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            if request.method == "HEAD":
                return web.Response(headers={"Content-Length": "1000"})
            return web.Response(body=b"x" * 1000)

        async def status(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            return web.Response(status=int(request.match_info["code"]))

        async def chunked(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(5):
                await response.write(f"part {i};".encode())
            await response.write_eof()
            return response

        async def digest(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            body = await request.read()
            self.digested.append(len(body))
            return web.json_response(
                {
                    "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "chunked": request.headers.get("Transfer-Encoding", ""),
                    "length": request.headers.get("Content-Length", ""),
                }
            )

        async def close(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            return web.Response(text="bye", headers={"Connection": "close"})

        async def dies(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            response = web.StreamResponse(headers={"Content-Length": "100000"})
            await response.prepare(request)
            await response.write(b"y" * 1000)
            assert request.transport is not None
            request.transport.abort()
            return response

        async def hangs(request: web.Request) -> web.StreamResponse:
            await self._track(request)
            await self.release.wait()
            return web.Response()

        app.router.add_route("*", "/small", small)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/chunked", chunked)
        app.router.add_post("/digest", digest)
        app.router.add_get("/close", close)
        app.router.add_get("/dies", dies)
        app.router.add_get("/hangs", hangs)
        return app


@pytest.fixture
async def pod() -> AsyncIterator[Pod]:
    pod = Pod()
    runner = web.AppRunner(pod.app(), shutdown_timeout=0.5)  # a hanging handler is cut
    await runner.setup()
    pod.port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", pod.port)
    await site.start()
    yield pod
    pod.release.set()  # no handler left waiting: the test's loop ends with no task behind
    await runner.cleanup()


@pytest.fixture
async def pool() -> AsyncIterator[PodPool]:
    pool = PodPool(keepalive=60)
    yield pool
    pool.close()


async def fetch(
    pool: PodPool,
    port: int,
    target: str,
    method: str = "GET",
    *,
    body: aiohttp.StreamReader | None = None,
    headers: Headers | None = None,
    read_timeout: float | None = 5,
    body_timeout: float | None = None,
) -> tuple[int, bytes]:
    answer = await pool.request(
        method,
        "127.0.0.1",
        port,
        target,
        headers if headers is not None else CIMultiDict({"Host": "pod"}),
        body,
        connect_timeout=2,
        read_timeout=read_timeout,
        body_timeout=body_timeout,
    )
    try:
        return answer.status, await answer.read()
    finally:
        answer.release()


def stream_of(*chunks: bytes, end: bool = True, limit: int = 2**22) -> aiohttp.StreamReader:
    """A request body as the broker's server hands it over."""
    loop = asyncio.get_running_loop()
    browser = BaseProtocol(loop)
    browser.connection_made(asyncio.Transport())  # a browser still connected
    body = aiohttp.StreamReader(browser, limit, loop=loop)  # never pauses below 2 x limit
    for chunk in chunks:
        body.feed_data(chunk)
    if end:
        body.feed_eof()
    return body


async def test_answers_reuse_one_connection(pod: Pod, pool: PodPool) -> None:
    for _ in range(20):
        assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.seen) == 20
    assert len(pod.peers) == 1


async def test_head_and_bodiless_statuses_leave_the_connection_usable(
    pod: Pod, pool: PodPool
) -> None:
    answer = await pool.request(
        "HEAD",
        "127.0.0.1",
        pod.port,
        "/small",
        CIMultiDict({"Host": "pod"}),
        None,
        connect_timeout=2,
        read_timeout=5,
    )
    assert answer.content_length == 1000  # the length a GET would have
    assert await answer.read() == b""
    answer.release()
    assert await fetch(pool, pod.port, "/status/204") == (204, b"")
    assert await fetch(pool, pod.port, "/status/304") == (304, b"")
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 1


async def test_chunked_answer_is_read_whole(pod: Pod, pool: PodPool) -> None:
    status, body = await fetch(pool, pod.port, "/chunked")
    assert (status, body) == (200, b"part 0;part 1;part 2;part 3;part 4;")
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 1


async def test_a_pod_that_says_close_is_not_reused(pod: Pod, pool: PodPool) -> None:
    assert await fetch(pool, pod.port, "/close") == (200, b"bye")
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 2


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_request_bodies_arrive_whole(pod: Pod, pool: PodPool, with_length: bool) -> None:
    chunks = [bytes([i]) * 70_000 for i in range(8)]
    data = b"".join(chunks)
    headers = CIMultiDict({"Host": "pod"})
    if with_length:
        headers["Content-Length"] = str(len(data))
    status, body = await fetch(
        pool, pod.port, "/digest", "POST", body=stream_of(*chunks), headers=headers
    )
    assert status == 200
    answer = json.loads(body)
    assert answer["bytes"] == len(data)
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert (answer["length"], answer["chunked"]) == (
        (str(len(data)), "") if with_length else ("", "chunked")
    )
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 1  # the connection stayed good for the next request


async def test_a_body_that_breaks_off_is_not_passed_on_as_whole(pod: Pod, pool: PodPool) -> None:
    body = stream_of(b"a" * 1000, end=False)
    headers = CIMultiDict({"Host": "pod", "Content-Length": "5000"})
    sending = asyncio.ensure_future(
        fetch(pool, pod.port, "/digest", "POST", body=body, headers=headers)
    )
    await asyncio.sleep(0.1)
    body.set_exception(aiohttp.ClientPayloadError("the browser left"))
    with pytest.raises(BodyBrokeOff):
        await sending
    await asyncio.sleep(0.2)
    assert pod.digested == []  # the pod saw the connection end, not a complete body


async def test_a_body_the_browser_stops_sending_is_cut_off(pod: Pod, pool: PodPool) -> None:
    body = stream_of(b"a" * 1000, end=False)  # connected, but sends no more
    headers = CIMultiDict({"Host": "pod", "Content-Length": "5000"})
    with pytest.raises(BodyStalled):
        await fetch(pool, pod.port, "/digest", "POST", body=body, headers=headers, body_timeout=0.3)
    await asyncio.sleep(0.2)
    assert pod.digested == []
    assert len(pod.peers) == 1
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 2  # the cut connection was not reused


async def test_a_dying_pod_cuts_the_body_short(pod: Pod, pool: PodPool) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(pool, pod.port, "/dies")


async def test_a_silent_pod_times_out(pod: Pod, pool: PodPool) -> None:
    with pytest.raises(TimeoutError):
        await fetch(pool, pod.port, "/hangs", read_timeout=0.3)
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 2  # the timed-out connection was not reused


async def test_no_pod_listening_is_a_connection_error(pool: PodPool) -> None:
    with pytest.raises(aiohttp.ClientOSError) as caught:
        await fetch(pool, free_port(), "/small")
    assert caught.value.errno == errno.ECONNREFUSED


async def test_idle_connections_past_keepalive_are_not_reused(pod: Pod) -> None:
    pool = PodPool(keepalive=0.2)
    try:
        await fetch(pool, pod.port, "/small")
        await asyncio.sleep(0.3)
        await fetch(pool, pod.port, "/small")
    finally:
        pool.close()
    assert len(pod.peers) == 2


async def test_cancelled_request_closes_its_connection(pod: Pod, pool: PodPool) -> None:
    waiting = asyncio.ensure_future(fetch(pool, pod.port, "/hangs"))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await fetch(pool, pod.port, "/small") == (200, b"x" * 1000)
    assert len(pod.peers) == 2


# --- a raw pod: bytes the test writes itself ---------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture
async def raw_pod() -> AsyncIterator[Callable[[Script], Awaitable[tuple[int, list[int]]]]]:
    """Start a server running SCRIPT on each connection (with its number); returns the
    port and the list of connection numbers that saw a request."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(script: Script) -> tuple[int, list[int]]:
        count = 0
        served: list[int] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            count += 1
            number = count
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                served.append(number)
                await script(reader, writer, number)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            except asyncio.CancelledError:
                # Ended by the fixture: returns, as CPython 3.11's start_server callback
                # (asyncio/streams.py, connection_made) calls task.exception() on a
                # cancelled task and reports the CancelledError; 3.12 checks first.
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], served

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()  # Python 3.11: waits for no connection handler
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_interim_answers_are_skipped(raw_pod, pool: PodPool) -> None:
    async def early_hints(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n" + OK)
        await w.drain()
        await asyncio.sleep(1)

    port, _ = await raw_pod(early_hints)
    assert await fetch(pool, port, "/") == (200, b"ok")


async def test_kept_alive_connection_closed_by_the_pod_is_retried_once(
    raw_pod, pool: PodPool
) -> None:
    """The pod answers, keeps the connection, then closes it on the next request
    without answering (its idle timeout raced our reuse): a GET goes again on a
    new connection; a POST with a body is not sent twice."""

    async def one_answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(OK)
        await w.drain()
        await r.read(1)  # the next request's first byte: close without a word

    port, served = await raw_pod(one_answer)
    assert await fetch(pool, port, "/") == (200, b"ok")
    assert await fetch(pool, port, "/") == (200, b"ok")
    assert served == [1, 2]
    headers = CIMultiDict({"Host": "pod", "Content-Length": "4"})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(pool, port, "/", "POST", body=stream_of(b"data"), headers=headers)
    assert served == [1, 2]  # connection 2 took the POST and closed; no third try


async def test_an_early_answer_does_not_leave_the_connection_for_reuse(
    raw_pod, pool: PodPool
) -> None:
    async def refuse_body(r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await w.drain()
        await r.read()  # whatever comes, until the broker closes the connection

    port, served = await raw_pod(refuse_body)
    headers = CIMultiDict({"Host": "pod", "Content-Length": "1000000"})
    body = stream_of(b"z" * 1000, end=False)  # the rest never comes
    assert await fetch(pool, port, "/", "POST", body=body, headers=headers) == (413, b"big")
    # A reused connection would carry this GET as part of the POST's body, unanswered.
    assert await fetch(pool, port, "/", read_timeout=2) == (413, b"big")
    assert served == [1, 2]  # the half-sent connection was closed, not reused


async def test_a_pod_that_takes_none_of_the_body_times_out(raw_pod, pool: PodPool) -> None:
    """The pod reads the head, then nothing: the body fills the sockets and the send
    stalls; the read timeout bounds that silence as it bounds a silent answer."""
    stop = asyncio.Event()

    async def deaf(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _n: int) -> None:
        await stop.wait()

    port, served = await raw_pod(deaf)
    size = 64 * 2**20  # far more than both socket buffers
    body = stream_of(*[b"z" * 2**20] * 64, limit=size)
    headers = CIMultiDict({"Host": "pod", "Content-Length": str(size)})
    try:
        with pytest.raises(TimeoutError, match="none of the request body"):
            await asyncio.wait_for(
                fetch(pool, port, "/upload", "POST", body=body, headers=headers, read_timeout=0.5),
                timeout=20,
            )
    finally:
        stop.set()
    assert served == [1]
