"""A lean HTTP/1.1 client for the pods: keep-alive connections, one write per request.

aiohttp's ClientSession builds a request object, a response object, timers
and a connection key for every call; at 1 KiB answers that was a quarter of
the broker's CPU. Proxying needs less: the pod is a fixed host:port, the
headers are already filtered, nothing is decompressed, no cookies are kept.
This client writes the request head in one send and parses the answer with
aiohttp's own protocol (its C parser, sock_read timeout and flow control),
so only the plumbing around it is ours; how it drives that protocol lives in
aiohttp_internals.py. WebSocket handshakes still go through aiohttp's client:
the splice takes the socket over from there.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING

from aiohttp import ClientOSError, ServerDisconnectedError, ServerTimeoutError

from .aiohttp_internals import ResponseProtocol, serialize_head

if TYPE_CHECKING:
    from aiohttp import StreamReader
    from multidict import CIMultiDict, CIMultiDictProxy

#: RFC 9110 9.2.2: safe to send again when a kept-alive connection turns out closed.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class BodyBrokeOff(Exception):
    """The browser's request body ended early (it left): nothing is wrong with the pod."""


class BodyStalled(Exception):
    """The browser sent nothing of its request body for the body timeout (nginx's
    client_body_timeout): an upload that stopped, or a slowloris body."""


class PodAnswer:
    """The pod's status and headers, and its body as a stream (aiohttp's StreamReader)."""

    __slots__ = ("status", "reason", "headers", "content", "_conn", "_pool", "_sender")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
        conn: PodConnection,
        pool: PodPool,
        sender: asyncio.Task[None] | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._conn: PodConnection | None = conn
        self._pool = pool
        self._sender = sender

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """The connection goes back to the pool if the whole exchange is over, else it closes."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            sender.cancel()  # the pod answered before it had the whole body
            conn.close()
            return
        self._pool.put_back(conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if self._sender is not None:
            self._sender.cancel()
        if conn is not None:
            conn.close()


class PodConnection(ResponseProtocol):
    """aiohttp's response protocol, plus where it goes and when it was last used."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> None:
        super().__init__(loop)
        self.key = key
        self.idle_since = 0.0


class PodPool:
    """Idle keep-alive connections per pod address; the newest is reused first."""

    def __init__(self, *, keepalive: float = 60.0) -> None:
        self.keepalive = keepalive
        self._idle: defaultdict[tuple[str, int], deque[PodConnection]] = defaultdict(deque)

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: CIMultiDict[str],
        body: StreamReader | None,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        body_timeout: float | None = None,
    ) -> PodAnswer:
        """Send the request and wait for the answer's head.

        READ_TIMEOUT is the longest silence of the pod: no byte of its answer, or
        none of the request body taken while its socket is full. BODY_TIMEOUT is
        the longest silence of the browser while it sends the body.

        A kept-alive connection the pod closed meanwhile fails before any answer;
        an idempotent request without a body is then sent once more on a new one.
        Connection failures are aiohttp's (ClientOSError, ServerDisconnectedError,
        ServerTimeoutError), as the callers already tell those apart.
        """
        chunked = body is not None and "Content-Length" not in headers
        if chunked:  # the browser's body of unknown length goes on as it came
            headers["Transfer-Encoding"] = "chunked"
        head = serialize_head(f"{method} {target} HTTP/1.1", headers)
        key = (host, port)
        retry = method in IDEMPOTENT and body is None
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect_timeout)
            conn.expect(head_only=method == "HEAD", read_timeout=read_timeout)
            try:
                return await self._exchange(
                    conn, head, body, chunked, body_timeout=body_timeout, pod_timeout=read_timeout
                )
            except (ServerDisconnectedError, ClientOSError):
                conn.close()
                if not (reused and retry):
                    raise
                retry = False
            except BaseException:
                conn.close()
                raise

    async def _exchange(
        self,
        conn: PodConnection,
        head: bytes,
        body: StreamReader | None,
        chunked: bool,
        *,
        body_timeout: float | None,
        pod_timeout: float | None,
    ) -> PodAnswer:
        transport = conn.transport
        if transport is None:
            raise ServerDisconnectedError()
        transport.write(head)
        sender = None
        if body is None:
            conn.arm_read_timeout()
        else:
            sender = asyncio.ensure_future(
                _send_body(conn, body, chunked, body_timeout=body_timeout, pod_timeout=pod_timeout)
            )
        try:
            while True:
                status, reason, headers, payload = await conn.answer()
                if status >= 200 or status == 101:
                    break  # 1xx answers (100 Continue, 103 Early Hints) are not the answer
        except BaseException:
            if sender is not None:
                sender.cancel()
            raise
        return PodAnswer(status, reason, headers, payload, conn, self, sender)

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> PodConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: PodConnection(loop, key), key[0], key[1]
                )
        except TimeoutError as exc:
            raise ServerTimeoutError(f"connecting to {key[0]}:{key[1]} timed out") from exc
        except OSError as exc:
            raise ClientOSError(
                exc.errno, f"cannot connect to {key[0]}:{key[1]}: {exc.strerror}"
            ) from exc
        return conn

    def _take(self, key: tuple[str, int]) -> PodConnection | None:
        idle = self._idle.get(key)
        expired = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.alive and conn.idle_since > expired:
                return conn
            conn.close()
        return None

    def put_back(self, conn: PodConnection) -> None:
        if not conn.reusable:
            conn.close()
            return
        conn.idle_since = now = time.monotonic()
        idle = self._idle[conn.key]
        while idle and idle[0].idle_since < now - self.keepalive:  # the stalest sit at the left
            idle.popleft().close()
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _send_body(
    conn: PodConnection,
    body: StreamReader,
    chunked: bool,
    *,
    body_timeout: float | None,
    pod_timeout: float | None,
) -> None:
    """Stream the browser's body to the pod, pausing while the pod's socket is full.

    Either side may fall silent only so long: a stalled upload holds a browser
    connection, a pod connection and the request's memory. A failure is set on
    the connection, where reading the answer reports it.
    """
    try:
        while True:
            try:
                async with asyncio.timeout(body_timeout):
                    chunk = await body.readany()
            except TimeoutError:
                raise BodyStalled(f"no part of the body for {body_timeout:g} s") from None
            transport = conn.transport
            if transport is None:
                return  # the connection is gone; reading the answer reports why
            if not chunk:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                break
            if chunked:
                transport.writelines((f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if conn.full:
                try:
                    async with asyncio.timeout(pod_timeout):
                        await conn.drain()
                except TimeoutError:
                    raise ServerTimeoutError(
                        f"the pod took none of the request body for {pod_timeout:g} s"
                    ) from None
        conn.arm_read_timeout()
    except asyncio.CancelledError:
        raise
    except (BodyStalled, ServerTimeoutError) as exc:
        conn.fail(exc)
        conn.close()
    except Exception as exc:  # the pod must not take a short body for a whole one
        conn.fail(BodyBrokeOff(repr(exc)))
        conn.close()
