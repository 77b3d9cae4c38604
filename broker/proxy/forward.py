"""Stream a request to the user's pod and the answer back, with no buffering.

Bodies flow chunk by chunk both ways (a 1 GiB download costs the broker a few
MB), nothing is decompressed or recompressed (SSE passes as it comes), and
hop-by-hop headers stop here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .aiohttp_internals import MalformedAnswer, cancel_keep_alive, feed_browser, feed_pod
from .headers import downstream_headers
from .splice import Splice
from .upstream import BodyBrokeOff, PodPool

SMALL_BODY = 64 * 1024  # answers with a known length below this are sent in one write


class PodUnreachable(Exception):
    """The pod refused or dropped the connection before answering."""


class PodTimeout(Exception):
    """The pod did not answer in time."""


class PodBadAnswer(Exception):
    """The pod answered something no browser should get: a malformed head (Content-Length
    with Transfer-Encoding, two Content-Lengths: the makings of response smuggling), or a
    101 to a request that asked for no upgrade."""


class BrokerBusy(Exception):
    """The broker itself ran out of something (file descriptors, memory): not the pod's fault."""


_OUR_LIMITS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@contextlib.contextmanager
def connecting() -> Iterator[None]:
    """Connecting to the pod: its failures become PodUnreachable, PodTimeout or BrokerBusy."""
    try:
        yield
    except (
        aiohttp.ClientConnectorError,
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientOSError,
    ) as exc:
        raise _unreachable(exc) from exc
    except TimeoutError as exc:
        raise PodTimeout(str(exc)) from exc


def _unreachable(exc: aiohttp.ClientError) -> Exception:
    """Tell a pod that is gone from a broker that cannot open one more socket."""
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(cause, OSError) and cause.errno in _OUR_LIMITS:
        return BrokerBusy(str(exc))
    return PodUnreachable(str(exc))


def request_target(request: web.Request) -> str:
    """The path and query as the browser sent them; an absolute-form target
    (`GET http://elsewhere/x`) is cut to its path: the pod is the only host."""
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


def target_url(addr: str, request: web.Request, *, websocket: bool = False) -> URL:
    base = (
        addr.replace("http://", "ws://", 1).replace("https://", "wss://", 1) if websocket else addr
    )
    return URL(base + request_target(request), encoded=True)


@functools.lru_cache(maxsize=4096)
def host_port(addr: str) -> tuple[str, int]:
    url = URL(addr)
    if url.scheme != "http" or url.host is None or url.port is None:
        raise PodUnreachable(f"not a pod address: {addr!r}")
    return url.host, url.port


async def proxy_http(
    request: web.Request,
    pods: PodPool,
    addr: str,
    headers: CIMultiDict[str],
    *,
    connect_timeout: float,
    read_timeout: float,
    body_timeout: float,
    relay: Relay | None = None,
) -> web.StreamResponse:
    """Raises BodyStalled for an upload the browser stopped sending (a 408 page).
    RELAY sends the answer on (relay_answer when None; overlay.relay_page for a page)."""
    host, port = host_port(addr)
    try:
        with connecting():
            upstream = await pods.request(
                request.method,
                host,
                port,
                request_target(request),
                headers,
                request.content if request.body_exists else None,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                body_timeout=body_timeout,
            )
    except BodyBrokeOff as exc:
        raise web.HTTPBadRequest(text="The request body broke off before its end.") from exc
    except MalformedAnswer as exc:
        raise PodBadAnswer(f"malformed answer: {exc.message}"[:300]) from exc
    if upstream.status == 101:
        upstream.release()
        raise PodBadAnswer("101 Switching Protocols to a request that asked for no upgrade")
    return await (relay or relay_answer)(request, upstream)


class Answer(Protocol):
    """What relay_answer needs of a pod's answer: ours (PodAnswer) or aiohttp's."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content(self) -> aiohttp.StreamReader: ...
    @property
    def content_length(self) -> int | None: ...
    async def read(self) -> bytes: ...
    def release(self) -> object: ...


Relay = Callable[[web.Request, Answer], Awaitable[web.StreamResponse]]


async def relay_answer(
    request: web.Request, upstream: Answer, *, close: bool = False, prefix: bytes = b""
) -> web.StreamResponse:
    """Send the pod's answer on to the browser, streamed unless it is small; `close`:
    then close the browser's connection (a refused upgrade: what follows on it was
    meant for a WebSocket, never to be read as the next request). `prefix`: the start
    of the body, already read from the stream (a page over overlay.MAX_PAGE)."""
    try:
        out_headers = downstream_headers(upstream.headers)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY and not prefix:
            body = await upstream.read()
            out_headers.popall("Content-Length", None)
            small = web.Response(
                status=upstream.status, reason=upstream.reason, headers=out_headers, body=body
            )
            if close:
                small.force_close()
            return small
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        if close:
            response.force_close()
        if length is None:
            out_headers.popall("Content-Length", None)
        await response.prepare(request)
        try:
            if prefix:
                await response.write(prefix)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError):
            # Headers are gone already: cut the connection so the browser sees a
            # truncated answer, never a short one that looks complete.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
    except TimeoutError as exc:
        raise PodTimeout(str(exc)) from exc
    finally:
        upstream.release()


async def proxy_websocket(
    request: web.Request,
    http: aiohttp.ClientSession,
    addr: str,
    headers: CIMultiDict[str],
    *,
    on_client_frame: Callable[[], None] | None,
    timeout: aiohttp.ClientTimeout,
) -> web.StreamResponse:
    """Pass the browser's handshake to the pod; once it answers 101, splice the two
    sockets. Any other answer (a dead pod's error, a pod's refusal) is an HTTP one."""
    with connecting():
        upstream = await http.request(
            "GET",
            target_url(addr, request),
            headers=headers,
            allow_redirects=False,
            read_until_eof=False,
            timeout=timeout,
        )
    del headers
    cancel_keep_alive(request)  # it is a WebSocket or it ends: relay_answer(close=True)
    if upstream.status != 101:
        return await relay_answer(request, upstream, close=True)
    connection = upstream.connection
    try:
        if connection is None or connection.protocol is None or connection.transport is None:
            raise PodUnreachable("the pod closed the WebSocket during the handshake")
        if request.transport is None:
            raise web.HTTPBadRequest(text="The browser left during the handshake.")
        accepted = downstream_headers(upstream.headers)
        accepted["Connection"] = "Upgrade"
        accepted["Upgrade"] = "websocket"
        response = web.StreamResponse(status=101, reason="Switching Protocols", headers=accepted)
        del accepted
        await response.prepare(request)
        splice = Splice(request.transport, on_browser_frame=on_client_frame)
        feed_pod(connection, splice.pod.pass_on, splice.pod.handshake_ended)
        await splice.take_pod(connection.transport)
    finally:
        upstream.close()
    del upstream, connection
    feed_browser(request, splice.browser.pass_on, splice.browser.ended)
    try:
        await splice.done
    finally:
        splice.close()
    return response
