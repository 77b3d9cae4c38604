"""Stream a request to the user's pod and the answer back, with no buffering.

Bodies flow chunk by chunk both ways (a 1 GiB download costs the broker a few
MB), nothing is decompressed or recompressed (SSE passes as it comes), and
hop-by-hop headers stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Iterator

import aiohttp
from aiohttp import web
from yarl import URL

from .headers import downstream_headers

SMALL_BODY = 64 * 1024  # answers with a known length below this are sent in one write


class PodUnreachable(Exception):
    """The pod refused or dropped the connection before answering."""


class PodTimeout(Exception):
    """The pod did not answer in time."""


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


def target_url(addr: str, request: web.Request, *, websocket: bool = False) -> URL:
    base = (
        addr.replace("http://", "ws://", 1).replace("https://", "wss://", 1) if websocket else addr
    )
    return URL(base + request.raw_path, encoded=True)


async def proxy_http(
    request: web.Request,
    http: aiohttp.ClientSession,
    addr: str,
    headers: object,
    *,
    timeout: aiohttp.ClientTimeout,
) -> web.StreamResponse:
    data = request.content if request.body_exists else None
    with connecting():
        upstream = await http.request(
            request.method,
            target_url(addr, request),
            headers=headers,  # type: ignore[arg-type]
            data=data,
            allow_redirects=False,
            timeout=timeout,
        )
    try:
        out_headers = downstream_headers(upstream.headers)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY:
            body = await upstream.read()
            out_headers.popall("Content-Length", None)
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=out_headers, body=body
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        if length is None:
            out_headers.popall("Content-Length", None)
        await response.prepare(request)
        try:
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
    headers: object,
    *,
    on_client_message: object,
    connect_timeout: float,
) -> web.WebSocketResponse:
    """Bridge a WebSocket both ways; the pod is connected first so a dead pod gets an HTTP error."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    with connecting():
        try:
            upstream = await http.ws_connect(
                target_url(addr, request, websocket=True),
                headers=headers,  # type: ignore[arg-type]
                protocols=protocols,
                autoping=False,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise web.HTTPBadGateway(
                text=f"The WebUI refused the WebSocket ({exc.status})."
            ) from exc

    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=False, max_msg_size=0
    )
    await client.prepare(request)
    seen = on_client_message if callable(on_client_message) else None

    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        from_client: bool,
    ) -> None:
        async for msg in source:
            if from_client and seen is not None:
                seen(msg)
            if msg.type is aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type is aiohttp.WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                break

    tasks = [
        asyncio.create_task(pump(client, upstream, True)),
        asyncio.create_task(pump(upstream, client, False)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        code = upstream.close_code or 1000
        await client.close(code=code if 1000 <= code < 5000 else 1011)
        await upstream.close()
    return client
