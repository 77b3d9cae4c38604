"""After a WebSocket handshake, bytes flow between browser and pod untouched.

No message is decoded, buffered or re-encoded: what one side sends is written
to the other side's socket from the event loop's own callback, with no task
per direction. An idle WebSocket therefore costs the two connections and a
few small objects rather than two WebSocket stacks and two pump tasks, and a
browser and its WebUI negotiate subprotocols and compression between
themselves, as if the broker were not there.

Only frame headers are read, payloads are skipped by length: the browser's,
to notice a person (a text or binary message, never a ping), and the pod's,
so that a pod that vanishes between two frames still gets the browser a close
frame (1011) instead of a torn connection.

The two directions plug into aiohttp the way its own WebSocket reader does
(each protocol's parser hook, the same as ``ws_connect`` and
``WebSocketResponse.prepare`` use); aiohttp_internals.py does the plugging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from .aiohttp_internals import drained, take_socket

DATA_OPCODES = frozenset({0x0, 0x1, 0x2})  # continuation, text, binary
CLOSE_OPCODE = 0x8
GOING_AWAY_1011 = b"\x88\x02\x03\xf3"  # an unmasked close frame, code 1011, no reason


class FrameScanner:
    """Where frames start in one direction's byte stream; their payloads are skipped, never copied."""

    __slots__ = ("_head", "_skip", "closed")

    def __init__(self) -> None:
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = b""  # a frame header cut by the end of the last chunk
        self.closed = False  # a close frame went by

    @property
    def between_frames(self) -> bool:
        return not self._skip and not self._head

    def feed(self, data: bytes) -> int:
        """The number of data frames (text, binary, continuation) that begin in `data`."""
        if self._skip >= len(data):
            self._skip -= len(data)
            return 0
        pos, self._skip = self._skip, 0
        if self._head:
            data, pos = self._head + data[pos:], 0
            self._head = b""
        end, found = len(data), 0
        while pos < end:
            if end - pos < 2:
                break
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            size += 4 if second & 0x80 else 0  # the mask key
            if end - pos < size:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = first & 0x0F
            if opcode in DATA_OPCODES:
                found += 1
            elif opcode == CLOSE_OPCODE:
                self.closed = True
            pos += size + length
        if pos > end:
            self._skip = pos - end
        elif pos < end:
            self._head = bytes(data[pos:])
        return found


class Flow:
    """One direction: bytes from a source, written as they come to a sink."""

    __slots__ = ("frames", "on_data_frame", "sink", "source", "splice")

    def __init__(self, splice: Splice, on_data_frame: Callable[[], None] | None) -> None:
        self.splice = splice
        self.on_data_frame = on_data_frame
        self.frames = FrameScanner()
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None

    def pass_on(self, data: bytes) -> None:
        sink = self.sink
        if sink is None or sink.is_closing():
            return
        if self.frames.feed(data) and self.on_data_frame is not None:
            self.on_data_frame()
        sink.write(data)


class FromBrowser(Flow):
    """Fed by aiohttp's server protocol, through its parser hook
    (``aiohttp_internals.feed_browser``). Writing to a slow pod pauses the
    browser's socket: see ``FromPod.pause_writing``."""

    __slots__ = ()

    def ended(self) -> None:
        self.splice.finish(self)


class FromPod(Flow, asyncio.Protocol):
    """The pod's socket's own protocol, once it is handed over (``Splice.take_pod``).
    Before that it is fed by aiohttp's parser hook (``aiohttp_internals.feed_pod``)
    the bytes the pod sent right after its 101; aiohttp's later events about its
    old socket are ignored."""

    __slots__ = ("high_water",)

    def __init__(self, splice: Splice, on_data_frame: Callable[[], None] | None, high_water: int):
        super().__init__(splice, on_data_frame)
        self.high_water = high_water  # the browser transport's: past it, the pod is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.source = self.splice.browser.sink = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pass_on(data)
        if self.sink is not None and self.sink.get_write_buffer_size() > self.high_water:
            self.splice.hold_pod()

    def eof_received(self) -> None:
        return None  # the pod is done: close, which finishes the splice

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.finish(self)

    def pause_writing(self) -> None:
        browser = self.splice.browser.source
        if browser is not None and not browser.is_closing():
            browser.pause_reading()

    def resume_writing(self) -> None:
        browser = self.splice.browser.source
        if browser is not None and not browser.is_closing():
            browser.resume_reading()

    def handshake_ended(self) -> None:
        """aiohttp's socket of the handshake ended or failed: what matters only
        before the socket is ours."""
        if self.source is None:
            self.splice.finish(self)


class Splice:
    """Both directions of one WebSocket, and the end of it: the first side to
    close or fail closes the other, after what was already sent is delivered."""

    __slots__ = ("_drain", "browser", "done", "pod")

    def __init__(
        self, browser: asyncio.Transport, *, on_browser_frame: Callable[[], None] | None
    ) -> None:
        self.browser = FromBrowser(self, on_browser_frame)
        self.browser.source = browser
        self.pod = FromPod(self, None, browser.get_write_buffer_limits()[1])
        self.pod.sink = browser
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain: asyncio.Task[None] | None = None

    async def take_pod(self, handshake_socket: asyncio.Transport) -> None:
        """Own the pod's socket, and let aiohttp's connection of the handshake go.

        The socket's descriptor is duplicated into a transport of our own; aiohttp
        then closes its copy as usual, which leaves the connection open. What the
        pod sent after its 101 has reached ``self.pod`` already (``feed_pod``),
        and the old transport reads nothing more.
        """
        own = take_socket(handshake_socket)
        await asyncio.get_running_loop().create_connection(lambda: self.pod, sock=own)

    def hold_pod(self) -> None:
        """The browser reads slower than the pod sends: stop reading the pod until
        the browser's socket has sent what it holds."""
        if self._drain is not None or self.pod.source is None:
            return
        self.pod.source.pause_reading()
        self._drain = asyncio.ensure_future(self._resume_pod_when_drained())

    async def _resume_pod_when_drained(self) -> None:
        assert self.browser.source is not None
        with contextlib.suppress(ConnectionError):
            await drained(self.browser.source)
        self._drain = None
        if self.pod.source is not None and not self.pod.source.is_closing():
            self.pod.source.resume_reading()

    def finish(self, flow: Flow) -> None:
        if self.done.done():
            return
        frames = flow.frames
        pod_vanished = flow is self.pod and not frames.closed and frames.between_frames
        sink = flow.sink
        if sink is not None:
            if pod_vanished and not sink.is_closing():
                # The pod left without a close frame: tell the browser in WebSocket terms.
                sink.write(GOING_AWAY_1011)
            sink.close()  # sends what it holds first
        self.done.set_result(None)

    def close(self) -> None:
        """Both sockets close (each sends what it holds first); called when the handler ends."""
        if self._drain is not None:
            self._drain.cancel()
        for flow in (self.browser, self.pod):
            if flow.source is not None:
                flow.source.close()
        if not self.done.done():
            self.done.set_result(None)
