"""Gradio's queue protocols, driving the same engine as the REST API.

Two generations of the protocol are spoken because real WebUIs use both and
the broker must carry each through its proxy:

- Gradio 3 (A1111 1.x): WebSocket ``/queue/join``. Server ``send_hash``,
  client ``{fn_index, session_hash}``, server ``estimation`` + ``send_data``,
  client ``{data, ...}``, server ``process_starts``, ``progress``...,
  ``process_completed``, then closes.
- Gradio 4 (Forge, sse_v3): ``POST /queue/join`` answers ``{event_id}``;
  ``GET /queue/data?session_hash=`` is an SSE stream of the session's messages
  (each with ``event_id``), ending with ``close_stream`` once no event of the
  session is pending. Unknown sessions get 404 ``Session not found.``
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from stub_engine import Engine, GenRequest, GenResult, Job, RequestError
from stub_render import image_b64

HEARTBEAT_SECONDS = 15.0  # Gradio's heartbeat_rate on idle SSE streams
HANDSHAKE_TIMEOUT = 5.0  # Gradio 3 waits this long for each client message


@dataclass
class Session:
    """Messages waiting for a session's ``/queue/data`` stream, as Gradio 4 keeps them."""

    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    pending: set[str] = field(default_factory=set)


class GradioQueue:
    def __init__(self, engine: Engine, sockets: weakref.WeakSet[web.WebSocketResponse]) -> None:
        self.engine = engine
        self.sockets = sockets
        self.sessions: dict[str, Session] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.durations: list[float] = []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/queue/join", self.ws_join)
        app.router.add_post("/queue/join", self.sse_join)
        app.router.add_get("/queue/data", self.sse_data)

    def cancel_all(self) -> None:
        """Stop the SSE feeders at shutdown; their jobs are abandoned with the process."""
        for task in self.tasks:
            task.cancel()

    def _submit(self, payload: Any) -> Job:
        """Turn Gradio ``data`` into a job; A1111's UI sends ``[id_task, prompt, negative, ...]``."""
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise RequestError("payload needs a 'data' list")
        id_task = None
        if data and isinstance(data[0], str) and data[0].startswith("task("):
            id_task, data = data[0], data[1:]
        texts = [d if isinstance(d, str) else "" for d in data[:2]] + ["", ""]
        gen = GenRequest.from_json("txt2img", {"prompt": texts[0], "negative_prompt": texts[1]})
        return self.engine.submit(gen, id_task=id_task, label=id_task or "")

    def _estimation(self, rank: int, queue_size: int) -> dict[str, Any]:
        """Gradio 3's estimation message (Gradio 4 reads the same keys it knows)."""
        avg = sum(self.durations) / len(self.durations) if self.durations else None
        return {
            "msg": "estimation",
            "rank": rank,
            "queue_size": queue_size,
            "avg_event_process_time": avg,
            "avg_event_concurrent_process_time": avg,
            "rank_eta": avg * (rank + 1) if avg is not None else None,
            "queue_eta": avg * queue_size if avg is not None else 0,
        }

    def _busy(self) -> int:
        return len(self.engine.pending) + (self.engine.current is not None)

    async def _run(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """The messages of one event from start to ``process_completed``."""
        started = time.monotonic()
        while (update := await job.updates.get()).kind != "done":
            if update.kind == "start":
                yield {"msg": "process_starts", "eta": self.delay_estimate(job)}
            else:
                unit = {"index": update.step, "length": update.steps, "unit": "steps"}
                yield {
                    "msg": "progress",
                    "progress_data": [{**unit, "progress": None, "desc": None}],
                }
        try:
            result = await job.done
        except Exception as exc:
            yield {"msg": "process_completed", "output": {"error": str(exc)}, "success": False}
            return
        duration = time.monotonic() - started
        self.durations = [*self.durations[-9:], duration]
        avg = sum(self.durations) / len(self.durations)
        output = {"data": _outputs(result), "is_generating": False}
        output |= {"duration": duration, "average_duration": avg}
        yield {"msg": "process_completed", "output": output, "success": True}

    def delay_estimate(self, job: Job) -> float:
        return self.engine.delay * job.request.batch_size * job.request.n_iter

    async def ws_join(self, request: web.Request) -> web.StreamResponse:
        """Gradio 3: one WebSocket per event, closed by the server when it completes."""
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return web.json_response({"detail": "WebSocket upgrade required"}, status=400)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await ws.send_json({"msg": "send_hash"})
            if await _receive_json(ws) is None:
                return ws
            await ws.send_json(self._estimation(self._busy(), self._busy() + 1))
            await ws.send_json({"msg": "send_data"})
            payload = await _receive_json(ws)
            if payload is None:
                return ws
            try:
                job = self._submit(payload)
            except RequestError as exc:
                output = {"error": str(exc)}
                await ws.send_json({"msg": "process_completed", "output": output, "success": False})
                return ws
            async for message in self._run(job):
                await ws.send_json(message)
        except ConnectionResetError:
            pass  # the browser left; the job still finishes, as on A1111
        finally:
            await ws.close()
        return ws

    async def sse_join(self, request: web.Request) -> web.Response:
        """Gradio 4: queue an event and answer its id; messages go to the session stream."""
        try:
            payload = await request.json()
            session_hash = str(payload["session_hash"])
            job = self._submit(payload)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"detail": f"bad join request: {exc}"}, status=422)
        event_id = uuid.uuid4().hex
        session = self.sessions.setdefault(session_hash, Session())
        session.pending.add(event_id)
        estimation = self._estimation(self.engine.rank(job), self._busy())
        session.messages.put_nowait({**estimation, "event_id": event_id})
        task = asyncio.create_task(self._feed(session, job, event_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"event_id": event_id})

    async def _feed(self, session: Session, job: Job, event_id: str) -> None:
        async for message in self._run(job):
            session.messages.put_nowait({**message, "event_id": event_id})

    async def sse_data(self, request: web.Request) -> web.StreamResponse:
        """Stream a session's messages, each written and flushed as soon as it exists."""
        session_hash = request.query.get("session_hash", "")
        session = self.sessions.get(session_hash)
        if session is None:
            return web.json_response({"detail": "Session not found."}, status=404)
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        try:
            while True:
                try:
                    message = await asyncio.wait_for(session.messages.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    message = {"msg": "heartbeat"}
                await resp.write(_sse(message))
                if message["msg"] == "process_completed":
                    session.pending.discard(message["event_id"])
                    if not session.pending:
                        await resp.write(_sse({"msg": "close_stream", "event_id": None}))
                        break
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the browser left; undelivered messages wait for it to reconnect
        finally:
            if not session.pending:
                self.sessions.pop(session_hash, None)
        return resp


def _sse(message: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(message)}\n\n".encode()


async def _receive_json(ws: web.WebSocketResponse) -> Any:
    """Next JSON text frame, or None when the client closes or stays silent too long."""
    try:
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    except TimeoutError:
        return None
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        return json.loads(msg.data)
    except json.JSONDecodeError:
        return None


def _outputs(result: GenResult) -> list[Any]:
    """A1111's txt2img outputs: gallery, generation info JSON, infotext HTML, log HTML."""
    paths = result.info.get("saved_paths") or [None] * len(result.images)
    gallery = [
        {"name": path, "data": f"data:image/png;base64,{image_b64(png)}", "is_file": False}
        for png, path in zip(result.images, paths, strict=False)
    ]
    infotext = (result.info.get("infotexts") or [""])[0]
    return [gallery, json.dumps(result.info), f"<p>{infotext}</p>", ""]
