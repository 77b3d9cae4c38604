"""``/stub/*``: endpoints no WebUI has, which let tests see what the proxy did.

Each one makes a proxy property observable from the far side: which headers
and identity arrived (``whoami``, ``echo-headers``), whether events are passed
one by one (``sse``), whether large bodies stream both ways without buffering
(``bytes``, ``upload``), and whether WebSockets carry text, binary and
server-initiated frames (``ws-echo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import time
import weakref

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter clamped to a sane range; 400 if it is not a number."""
    try:
        value = float(request.query.get(name, default))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from exc
    return max(low, min(high, value))


class TestKit:
    __test__ = False  # not a pytest class, whatever the name suggests

    def __init__(self, pod_id: str, sockets: weakref.WeakSet[web.WebSocketResponse]) -> None:
        self.pod_id = pod_id
        self.sockets = sockets

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/stub/whoami", self.whoami)
        app.router.add_get("/stub/echo-headers", self.echo_headers)
        app.router.add_get("/stub/sse", self.sse)
        app.router.add_get("/stub/bytes", self.zeros)
        app.router.add_post("/stub/upload", self.upload)
        app.router.add_get("/stub/ws-echo", self.ws_echo)
        app.router.add_get("/stub/set-cookie", self.set_cookie)
        app.router.add_get("/stub/page", self.page)

    async def whoami(self, request: web.Request) -> web.Response:
        """Whose pod this is and who the broker says is asking."""
        return web.json_response(
            {
                "pod": self.pod_id,
                "user": request.headers.get("X-Forwarded-User"),
                "email": request.headers.get("X-Forwarded-Email"),
                "cookies": sorted(request.cookies),
            }
        )

    async def set_cookie(self, request: web.Request) -> web.Response:
        """Set-Cookie for each NAME=VALUE of the query, as written: what a hostile WebUI
        would send to plant a cookie in its user's browser."""
        response = web.json_response({"set": sorted(request.query)})
        for name, value in request.query.items():
            response.headers.add("Set-Cookie", f"{name}={value}; Path=/")
        return response

    async def page(self, request: web.Request) -> web.StreamResponse:
        """An HTML page shaped as asked, for what a proxy may do to pages: ``pad=N`` bytes
        of comment, ``gzip=1`` compressed whatever the request accepts, ``chunked=1``
        without Content-Length, ``hide=1`` a stylesheet hiding every element, ``end=0``
        no ``</body>``, ``hold=S`` (chunked) S seconds between the first chunk and the rest:
        a slow page a proxy holds meanwhile. The request's Accept-Encoding is echoed in
        ``#encoding``."""
        pad = "x" * int(_number(request, "pad", 0, 0, 64 << 20))
        style = "<style>* { display: none !important; }</style>" if "hide" in request.query else ""
        accepted = request.headers.get("Accept-Encoding", "")
        text = (
            f"<!doctype html><html><head><title>stub page</title>{style}</head><body>"
            f'<h1 id="page">stub page of {self.pod_id}</h1>'
            f'<p id="encoding">{json.dumps(accepted)}</p><!--{pad}-->'
            + ("</body></html>\n" if request.query.get("end") != "0" else "")
        )
        body = text.encode()
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if request.query.get("gzip") == "1":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if request.query.get("chunked") != "1":
            return web.Response(body=body, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        hold = _number(request, "hold", 0, 0, 60)
        for at in range(0, len(body), CHUNK):
            await resp.write(body[at : at + CHUNK])
            if hold and not at:
                await asyncio.sleep(hold)
        await resp.write_eof()
        return resp

    async def echo_headers(self, request: web.Request) -> web.Response:
        """Every request header, names lower-cased, repeats joined by ", " so none hide."""
        merged: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return web.json_response(merged)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """``count`` numbered events ``interval`` seconds apart, each flushed at once."""
        count = int(_number(request, "count", 5, 0, 100_000))
        interval = _number(request, "interval", 1.0, 0.0, 3600.0)
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for n in range(count):
            if n:
                await asyncio.sleep(interval)
            payload = json.dumps({"n": n, "pod": self.pod_id, "t": time.time()})
            await resp.write(f"id: {n}\nevent: tick\ndata: {payload}\n\n".encode())
        await resp.write_eof()
        return resp

    async def zeros(self, request: web.Request) -> web.StreamResponse:
        """``size`` zero bytes in 64 KiB chunks, with a Content-Length to check against."""
        size = int(_number(request, "size", CHUNK, 0, 1 << 40))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        left = size
        while left > 0:
            await resp.write(_ZEROS[: min(left, CHUNK)])
            left -= CHUNK
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        """Hash the body as it streams in, so any size fits in constant memory."""
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            total += len(chunk)
        return web.json_response({"bytes": total, "sha256": digest.hexdigest()})

    async def ws_echo(self, request: web.Request) -> web.StreamResponse:
        """Echo text and binary frames; ``?push=S`` also sends a message every S seconds;
        ``?protocols=a,b`` are the subprotocols this end accepts."""
        push = _number(request, "push", 0.0, 0.0, 3600.0)
        offered = request.query.get("protocols", "")
        ws = web.WebSocketResponse(
            protocols=[p for p in offered.split(",") if p], max_msg_size=64 * 1024 * 1024
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"detail": "WebSocket upgrade required"}, status=400)
        await ws.prepare(request)
        self.sockets.add(ws)
        pusher = asyncio.create_task(self._push(ws, push)) if push > 0 else None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        except ConnectionResetError:
            pass
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pusher
        return ws

    async def _push(self, ws: web.WebSocketResponse, every: float) -> None:
        n = 0
        with contextlib.suppress(ConnectionResetError):
            while not ws.closed:
                await asyncio.sleep(every)
                await ws.send_json({"push": n, "pod": self.pod_id, "t": time.time()})
                n += 1
