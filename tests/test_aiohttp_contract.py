"""The contract broker/proxy/aiohttp_internals.py holds with aiohttp's internals.

Patch releases change internals (3.14.0 -> 3.14.5 changed the meaning of
feed_data's first value on upgraded connections and began pausing the socket
between a 101 and set_parser) while the proxy's own tests went on passing.
Each check here fails naming the installed aiohttp: the signature of every
internal the module calls, and on real loopback sockets each behaviour its
docstring lists. A second test keeps the internals in that one module.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_protocol import RequestHandler

from broker.proxy import aiohttp_internals as internals
from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
VERSION = f"aiohttp {aiohttp.__version__} (broker/proxy/aiohttp_internals.py knows {internals.TESTED_MINOR})"
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
TAIL = os.urandom(512 * 1024)  # past read_bufsize (64 KiB for sessions and servers)
LATER = os.urandom(100_000)


class _Any:
    def __repr__(self) -> str:
        return "…"


def shape(fn: Callable[..., object]) -> str:
    """A signature without annotations or default values: names, kinds, which have defaults."""
    sig = inspect.signature(fn)
    params = [
        p.replace(annotation=p.empty, default=p.empty if p.default is p.empty else _Any())
        for p in sig.parameters.values()
    ]
    return str(sig.replace(parameters=params, return_annotation=sig.empty))


SIGNATURES: list[tuple[str, Callable[..., object], str]] = [
    ("http_writer._serialize_headers", _serialize_headers, "(status_line, headers)"),
    ("ResponseHandler.__init__", ResponseHandler.__init__, "(self, loop)"),
    ("ResponseHandler.set_response_params", ResponseHandler.set_response_params,
     "(self, *, timer=…, skip_payload=…, read_until_eof=…, auto_decompress=…, read_timeout=…, "
     "read_bufsize=…, timeout_ceil_threshold=…, max_line_size=…, max_field_size=…, max_headers=…)"),
    ("ResponseHandler.start_timeout", ResponseHandler.start_timeout, "(self)"),
    ("ResponseHandler.read", ResponseHandler.read, "(self)"),
    ("ResponseHandler.is_connected", ResponseHandler.is_connected, "(self)"),
    ("ResponseHandler.set_exception", ResponseHandler.set_exception, "(self, exc, exc_cause=…)"),
    ("ResponseHandler.set_parser", ResponseHandler.set_parser,
     "(self, parser, payload, data_received_cb=…)"),
    ("BaseProtocol._drain_helper", BaseProtocol._drain_helper, "(self)"),
    ("RequestHandler.set_parser", RequestHandler.set_parser, "(self, parser, data_received_cb=…)"),
    ("RequestHandler.keep_alive", RequestHandler.keep_alive, "(self, val)"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fn", "expected"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_the_signatures_relied_on(name: str, fn: Callable[..., object], expected: str) -> None:
    assert shape(fn) == expected, f"{VERSION}: {name} is now {shape(fn)}"


def test_the_properties_and_slots_relied_on() -> None:
    for name in ("should_close", "writing_paused"):
        assert isinstance(inspect.getattr_static(ResponseHandler, name, None), property), (
            f"{VERSION}: ResponseHandler.{name} is no longer a property"
        )
    assert "_parser" in BaseProtocol.__slots__, f"{VERSION}: BaseProtocol has no _parser slot"
    assert inspect.iscoroutinefunction(RequestHandler._drain_helper), (
        f"{VERSION}: RequestHandler._drain_helper is no longer a coroutine function"
    )


async def test_the_response_parser_is_made_by_set_response_params() -> None:
    """`expect` reuses a parser only while `_parser` is what set_response_params made."""
    proto = internals.ResponseProtocol(asyncio.get_running_loop())
    assert proto._parser is None, f"{VERSION}: a new ResponseHandler already has a parser"
    proto.expect(head_only=False, read_timeout=5)
    assert proto._parser is not None, f"{VERSION}: set_response_params made no _parser"


def test_the_head_is_serialized_in_one_buffer() -> None:
    from multidict import CIMultiDict

    head = internals.serialize_head("GET /x HTTP/1.1", CIMultiDict(Host="pod", A="1"))
    assert head == b"GET /x HTTP/1.1\r\nHost: pod\r\nA: 1\r\n\r\n", f"{VERSION}: {head!r}"


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_the_pod_side_of_an_upgraded_connection() -> None:
    """What the pod sends right after its 101 waits, paused, for set_parser and
    reaches the parser inside it; later chunks follow (feed_data's False goes on);
    aiohttp's end of the socket is told; a duplicate of the socket outlives aiohttp."""
    go_on = asyncio.Event()
    heard: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHING + TAIL)
        await go_on.wait()
        writer.write(LATER)
        heard.set_result(await reader.readexactly(4))
        writer.close()

    server = await asyncio.start_server(pod, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    got: list[bytes] = []
    ended = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            answer = await http.get(
                f"http://127.0.0.1:{port}/ws", headers=UPGRADE, read_until_eof=False
            )
            assert answer.status == 101
            connection = answer.connection
            assert connection is not None and connection.transport is not None
            transport = connection.transport
            paused = await until(lambda: not transport.is_reading())
            assert paused, f"{VERSION}: the socket reads on between the 101 and set_parser"
            internals.feed_pod(connection, got.append, ended.set)
            within = b"".join(got)
            assert within and TAIL.startswith(within), (
                f"{VERSION}: set_parser did not hand over the bytes read after the 101 "
                f"({len(within)} bytes, a prefix: {TAIL.startswith(within)})"
            )
            assert await until(lambda: sum(map(len, got)) >= len(TAIL)), (
                f"{VERSION}: the parser got {sum(map(len, got))} of {len(TAIL)} bytes: "
                "feed_data's (False, b'') no longer means 'go on'"
            )
            assert b"".join(got) == TAIL, f"{VERSION}: bytes after the 101 changed or repeated"
            assert not ended.is_set()
            own = internals.take_socket(transport)
            answer.close()  # aiohttp closes its transport
            assert await until(ended.is_set), f"{VERSION}: no feed_eof when aiohttp's socket ended"
            loop = asyncio.get_running_loop()
            own.setblocking(False)
            go_on.set()
            later = b""
            async with asyncio.timeout(10):
                while len(later) < len(LATER):
                    chunk = await loop.sock_recv(own, 65536)
                    assert chunk, f"{VERSION}: closing aiohttp's connection ended the socket"
                    later += chunk
            assert later == LATER
            await loop.sock_sendall(own, b"pong")
            assert await asyncio.wait_for(heard, 10) == b"pong"
            own.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_the_browser_side_of_an_upgraded_connection() -> None:
    """What the browser sent with its upgrade request reaches the parser inside
    set_parser; later chunks follow; its end is told. keep_alive(False) leaves the
    connection's fate to the answer (so the proxy closes it by force_close and the splice)."""
    seen: dict[str, object] = {}

    async def upgrade(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "websocket"})  # fmt: skip
        internals.cancel_keep_alive(request)
        await response.prepare(request)
        transport = request.transport
        assert transport is not None
        seen["paused"] = await until(lambda: not transport.is_reading())
        got: list[bytes] = []
        ended = asyncio.Event()
        internals.feed_browser(request, got.append, ended.set)
        seen["within"] = b"".join(got)
        await asyncio.wait_for(ended.wait(), 10)
        seen["all"] = b"".join(got)
        return response

    async def plain(request: web.Request) -> web.Response:
        internals.cancel_keep_alive(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", upgrade)
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
        writer.write(f"GET /ws HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + TAIL)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await until(lambda: "within" in seen)
        writer.write(LATER)
        await writer.drain()
        writer.close()
        assert await until(lambda: "all" in seen), f"{VERSION}: the browser's end was not told"
        assert seen["paused"], f"{VERSION}: the socket reads on between the upgrade and set_parser"
        within = seen["within"]
        assert isinstance(within, bytes) and within and TAIL.startswith(within), (
            f"{VERSION}: set_parser did not hand over what came with the upgrade request"
        )
        assert seen["all"] == TAIL + LATER, (
            f"{VERSION}: the parser got {len(seen['all'])} of {len(TAIL + LATER)} bytes "  # type: ignore[arg-type]
            "in order: feed_data's (False, b'') no longer means 'go on'"
        )

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # the second request is served: the answer decided, not keep_alive
            writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), f"{VERSION}: {head!r}"
                assert await reader.readexactly(2) == b"ok"
        writer.close()
    finally:
        await runner.cleanup()


async def test_drained_waits_for_the_browser_to_read() -> None:
    """`drained` returns once a browser that read nothing reads: flow control of the splice."""
    outcome: dict[str, bool] = {}
    reading = asyncio.Event()

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 16 << 20
        await response.prepare(request)
        transport = request.transport
        assert transport is not None
        transport.write(b"x" * (16 << 20))  # far past the high-water mark
        waiting = asyncio.ensure_future(internals.drained(transport))
        await asyncio.sleep(0.2)
        outcome["waited"] = not waiting.done()
        reading.set()
        await asyncio.wait_for(waiting, 10)
        outcome["woke"] = True
        return response

    app = web.Application()
    app.router.add_get("/flood", flood)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        writer.write(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        await reading.wait()
        async with asyncio.timeout(20):
            while await reader.read(1 << 20) and "woke" not in outcome:
                pass
        writer.close()
        assert outcome == {"waited": True, "woke": True}, f"{VERSION}: _drain_helper: {outcome}"
    finally:
        await runner.cleanup()


#: Names of aiohttp internals (attributes, functions, classes) and of the parser
#: contract (feed_data, feed_eof) that only aiohttp_internals.py may use or define.
PRIVATE = frozenset(
    {
        "_parser", "_payload", "_payload_parser", "_drain_helper", "_serialize_headers",
        "_tail", "_message_tail", "_upgraded", "set_parser", "set_response_params",
        "keep_alive", "start_timeout", "writing_paused", "should_close",
        "ResponseHandler", "RequestHandler", "BaseProtocol", "feed_data", "feed_eof",
    }
)  # fmt: skip
ALLOWED = ROOT / "broker" / "proxy" / "aiohttp_internals.py"


def private_uses(path: Path) -> list[str]:
    """Every attribute, import, name or definition of PRIVATE in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.alias):
            name = node.name.rsplit(".", 1)[-1]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = node.name
        else:
            continue
        if name in PRIVATE:
            found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')} {name}")
    return found


def test_only_one_module_touches_aiohttp_internals() -> None:
    """ruff's banned-api keeps aiohttp's private modules out; attribute access on an
    object (`protocol._drain_helper()`) is beyond it, so the code is read here."""
    files = [*sorted((ROOT / "broker").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
    found = [use for path in files if path != ALLOWED for use in private_uses(path)]
    assert found == [], "aiohttp internals outside broker/proxy/aiohttp_internals.py"
    assert private_uses(ALLOWED), "the scan no longer sees the internals where they are"
