"""AUTOMATIC1111's HTTP surface: the page, ``/sdapi/v1/*`` and ``/internal/*``.

Response shapes follow ``modules/api/api.py`` and ``modules/progress.py`` of
A1111 1.x, including its quirks (``POST /sdapi/v1/options`` answers ``null``,
``/internal/ping`` answers ``{}``), because broker probes are written against
the real thing and must pass against this stand-in unchanged.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from stub_engine import MODEL_HASH, MODEL_TITLE, Engine, GenRequest, RequestError, result_json

PAGE_FILE = Path(__file__).with_name("stub_page.html")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=json.dumps)


async def _body(request: web.Request) -> Any:
    """The JSON body, or a FastAPI-style 422 so clients see the error they would on A1111."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"detail": f"invalid JSON body: {exc}"}),
            content_type="application/json",
        ) from exc


class WebUIApi:
    """Handlers bound to one engine; ``startup_delay`` stands for the model load."""

    def __init__(self, engine: Engine, startup_delay: float) -> None:
        self.engine = engine
        self.ready_at = time.monotonic() + startup_delay
        self.page = PAGE_FILE.read_text(encoding="utf-8")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_get("/internal/ping", self.ping)
        app.router.add_post("/internal/progress", self.internal_progress)
        app.router.add_get("/internal/pending-tasks", self.pending_tasks)
        app.router.add_post("/sdapi/v1/txt2img", self.txt2img)
        app.router.add_post("/sdapi/v1/img2img", self.img2img)
        app.router.add_get("/sdapi/v1/progress", self.progress)
        app.router.add_post("/sdapi/v1/interrupt", self.interrupt)
        app.router.add_post("/sdapi/v1/skip", self.skip)
        app.router.add_get("/sdapi/v1/options", self.get_options)
        app.router.add_post("/sdapi/v1/options", self.set_options)
        app.router.add_get("/sdapi/v1/sd-models", self.sd_models)
        app.router.add_route("GET", "/heartbeat/{tail:.*}", self.heartbeat)
        app.router.add_route("POST", "/heartbeat/{tail:.*}", self.heartbeat)

    async def index(self, request: web.Request) -> web.Response:
        """The WebUI page, labelled with whose pod it is (the broker sets X-Forwarded-User)."""
        user = request.headers.get("X-Forwarded-User")
        page = (
            self.page.replace("__POD_ID__", html.escape(self.engine.pod_id))
            .replace("__USER__", html.escape(user or "(anonymous)"))
            .replace("__REFRESH_MS__", str(self.engine.options["live_preview_refresh_period"]))
        )
        return web.Response(text=page, content_type="text/html")

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def heartbeat(self, request: web.Request) -> web.Response:
        """Gradio's session heartbeat; only its presence matters to the browser."""
        return _json({})

    async def ping(self, request: web.Request) -> web.Response:
        """503 until ``--startup-delay`` has passed, standing for the model load."""
        if time.monotonic() < self.ready_at:
            return _json({"detail": "model loading"}, status=503)
        return _json({})

    async def txt2img(self, request: web.Request) -> web.Response:
        return await self._generate(request, "txt2img")

    async def img2img(self, request: web.Request) -> web.Response:
        return await self._generate(request, "img2img")

    async def _generate(self, request: web.Request, kind: str) -> web.Response:
        body = await _body(request)
        try:
            gen = GenRequest.from_json(kind, body)
        except RequestError as exc:
            return _json({"detail": str(exc)}, status=422)
        job = self.engine.submit(gen, id_task=body.get("force_task_id") or None)
        # shield: a client hanging up does not cancel the job (A1111 finishes it too)
        result = await asyncio.shield(job.done)
        return _json(result_json(result, gen.parameters))

    async def progress(self, request: web.Request) -> web.Response:
        return _json(self.engine.sdapi_progress())

    async def internal_progress(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            return _json({"detail": "body must be a JSON object"}, status=422)
        try:
            id_live_preview = int(body.get("id_live_preview", -1))
        except (TypeError, ValueError):
            return _json({"detail": "id_live_preview must be an integer"}, status=422)
        return _json(self.engine.internal_progress(body.get("id_task"), id_live_preview))

    async def pending_tasks(self, request: web.Request) -> web.Response:
        return _json(self.engine.pending_tasks())

    async def interrupt(self, request: web.Request) -> web.Response:
        self.engine.interrupt()
        return _json({})

    async def skip(self, request: web.Request) -> web.Response:
        self.engine.skip()
        return _json(None)

    async def get_options(self, request: web.Request) -> web.Response:
        return _json(self.engine.options)

    async def set_options(self, request: web.Request) -> web.Response:
        """Merge like ``shared.opts.set``; an unknown checkpoint fails as in A1111.
        ``$STUB_OPTIONS_DELAY`` seconds first, as A1111 takes when an option loads a model."""
        await asyncio.sleep(float(os.environ.get("STUB_OPTIONS_DELAY", "0")))
        body = await _body(request)
        if not isinstance(body, dict):
            return _json({"detail": "body must be a JSON object"}, status=422)
        checkpoint = body.get("sd_model_checkpoint")
        if checkpoint is not None and checkpoint not in (MODEL_TITLE, MODEL_TITLE.split(" ")[0]):
            return _json(
                {"error": "RuntimeError", "detail": f"model {checkpoint!r} not found"}, 500
            )
        self.engine.options.update(body)
        return _json(None)

    async def sd_models(self, request: web.Request) -> web.Response:
        name = MODEL_TITLE.split(" ")[0]
        model = {"title": MODEL_TITLE, "model_name": name.rsplit(".", 1)[0], "hash": MODEL_HASH}
        return _json([{**model, "sha256": None, "filename": f"models/{name}", "config": None}])
