"""Every use of aiohttp's private internals, in one room: the proxy's data path.

aiohttp's public API cannot (1) send a request head and read the answer on a
kept-alive connection without a ClientSession's per-request objects (request,
response, timers, connection key; bench/proxy.py prints the data path's req/s
both ways, PodPool/ClientSession: 1.14x at 1 KiB and 1.19x at 1 MiB on a busy
2-core machine, 2026-12-04), nor (2) take over the sockets of an upgraded
connection. The proxy does both here and nowhere else: ruff's banned-api rule
(pyproject, [tool.ruff.lint.flake8-tidy-imports]) keeps aiohttp's private
modules out of every other file, and tests/test_aiohttp_contract.py scans
broker/ and bench/ for the private names.

pyproject holds aiohttp to the minor tested (>=3.14,<3.15), yet patch releases
change internals: between 3.14.0 and 3.14.5 the upgraded-connection path
changed the meaning of feed_data's first value and began pausing the socket
between a 101 and set_parser (3.14.0 client_proto.py data_received: `eof, tail
= feed_data(...)`, and no `_pause_reading_for_buffer` on the tail). The
contract test checks the signature of each internal and each behaviour below,
and fails naming the installed version (on 3.14.0: the two pauses). What this
module relies on, as read in aiohttp 3.14.5:

- http_writer.py `_serialize_headers(status_line, headers)`: a head in one
  buffer (the C version from _http_writer.pyx when built).
- client_proto.py `ResponseHandler`: `set_response_params()` makes its
  HttpResponseParser (`_parser`, None before); `start_timeout()` arms
  sock_read; `read()` gives (RawResponseMessage, StreamReader); `should_close`,
  `is_connected()`, `set_exception()`; base_protocol.py `BaseProtocol`:
  `writing_paused`, and `_drain_helper()` returns once the transport is under
  its low-water mark (resume_writing).
- `ResponseHandler.set_parser(parser, payload)` and web_protocol.py
  `RequestHandler.set_parser(parser)`: the bytes read after the upgrade
  (`_tail` / `_message_tail`; reading paused once they reach read_bufsize) go
  to `parser.feed_data()` within set_parser, then each later chunk as read.
  The first value feed_data returns means "protocol error: drop the parser"
  to the client and "EOF: close" to the server, so False goes on in both.
  The client calls `feed_eof()` / `set_exception()` on them when its socket ends.
- web_protocol.py `RequestHandler.keep_alive(False)`: cancels the keep-alive
  timer an earlier request left, while the handler runs. It does not end the
  connection: once the handler returns, the response's keep_alive decides
  (`start()`: `self._keepalive = bool(resp.keep_alive)`), so a refused upgrade
  is force_close()d (forward.relay_answer) and the splice closes both sockets.
  `_drain_helper()` as above, on the browser's side.
- Closing a ResponseHandler's transport closes its descriptor and never shuts
  the socket down, so a duplicate of the descriptor keeps the connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import StreamReader, web
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_writer import _serialize_headers

if TYPE_CHECKING:
    from aiohttp.connector import Connection
    from multidict import CIMultiDict, CIMultiDictProxy

#: The minor version this module was written and tested against (pyproject pins it).
TESTED_MINOR = "3.14"

#: A pod's answer head aiohttp's parser refused (Content-Length with
#: Transfer-Encoding, two Content-Lengths...): raised by `ResponseProtocol.answer`.
MalformedAnswer = HttpProcessingError


def serialize_head(start_line: str, headers: CIMultiDict[str]) -> bytes:
    """The start line and headers as one buffer, CRLFs and the blank line included."""
    return _serialize_headers(start_line, headers)


class ResponseProtocol(ResponseHandler):
    """aiohttp's client response protocol (its C parser, sock_read timeout and flow
    control), driven without a ClientSession; `upstream.PodConnection` builds on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._expecting: tuple[bool, float | None] | None = None

    def expect(self, *, head_only: bool, read_timeout: float | None) -> None:
        """Set up the parser for the next answer; the one in place serves again if it fits
        (aiohttp makes a new one per request, a cost the 1 KiB answers felt)."""
        wanted = (head_only, read_timeout)
        if wanted != self._expecting or self._parser is None:
            self.set_response_params(
                skip_payload=head_only, auto_decompress=False, read_timeout=read_timeout
            )
            self._expecting = wanted

    def arm_read_timeout(self) -> None:
        """The request is all sent: from now on the pod's silence counts."""
        self.start_timeout()

    async def answer(self) -> tuple[int, str, CIMultiDictProxy[str], StreamReader]:
        """The next answer's status, reason, headers and body stream; raises
        MalformedAnswer or aiohttp's connection errors."""
        message, payload = await self.read()
        return message.code, message.reason, message.headers, payload

    @property
    def alive(self) -> bool:
        return self.is_connected()

    @property
    def reusable(self) -> bool:
        """Open, and neither side asked to close after this answer."""
        return not self.should_close and self.is_connected()

    @property
    def full(self) -> bool:
        """The socket holds more than its high-water mark: wait on `drain` before writing."""
        return self.writing_paused

    async def drain(self) -> None:
        await self._drain_helper()

    def fail(self, exc: BaseException) -> None:
        """Reading the answer raises EXC."""
        self.set_exception(exc)


class _Parser:
    """Takes the place of aiohttp's WebSocketReader on an upgraded connection."""

    __slots__ = ("_data", "_end")

    def __init__(self, on_data: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        self._data = on_data
        self._end = on_end

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._data(data)
        return False, b""  # client: no protocol error; server: not EOF. Go on.

    def feed_eof(self) -> None:
        self._end()

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        self._end()


def cancel_keep_alive(request: web.Request) -> None:
    """No keep-alive timer of an earlier request wakes during this one (a WebSocket
    lasts hours). The answer's keep_alive still decides what follows it."""
    request.protocol.keep_alive(False)


def feed_browser(
    request: web.Request, on_data: Callable[[bytes], None], on_end: Callable[[], None]
) -> None:
    """From now on every byte the browser sends (after the upgrade request, and
    what came with it) goes to ON_DATA as read; ON_END when its socket ends."""
    # set_parser is typed for aiohttp's HttpRequestParser; it calls only feed_data and
    # feed_eof of what it is given (web_protocol.py, data_received / connection_lost).
    request.protocol.set_parser(_Parser(on_data, on_end))  # type: ignore[arg-type]


def feed_pod(
    connection: Connection, on_data: Callable[[bytes], None], on_end: Callable[[], None]
) -> None:
    """What the pod sent after its 101 goes to ON_DATA before this returns, later
    bytes as aiohttp reads them; ON_END if aiohttp sees the socket end or fail."""
    parser = _Parser(on_data, on_end)
    assert connection.protocol is not None
    connection.protocol.set_parser(parser, parser)


def take_socket(transport: asyncio.Transport) -> socket.socket:
    """aiohttp's transport stops reading, and its socket is duplicated: closing
    aiohttp's connection afterwards leaves the duplicate connected."""
    transport.pause_reading()
    fd = os.dup(transport.get_extra_info("socket").fileno())
    try:
        return socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        raise


async def drained(transport: asyncio.Transport) -> None:
    """Returns once the browser's socket, paused past its high-water mark, has
    sent down to its low-water mark (what aiohttp's own writers await)."""
    # BaseProtocol._drain_helper (aiohttp base_protocol.py); get_protocol() is typed as
    # asyncio's BaseProtocol, which has none.
    await transport.get_protocol()._drain_helper()  # type: ignore[attr-defined]
