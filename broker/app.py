"""Build the aiohttp application: clients in cleanup contexts, routes, middlewares.

Start-up order (reversed on shutdown): Redis (embedded when no URL), the fleet's
runtime (broker/runtime.py: store, backend, controller, background tasks), then
the authenticator. Constructors only store; the contexts do the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from redis.asyncio import Redis

from fleet import EmbeddedRedis, FleetSpec, StoreUnavailable, connect_redis, specstore

from . import admin, api, bar, chooser, ended, gallery, home, metrics, pages, presence, waiting
from .appkeys import (
    ACCESS,
    ACTIVITY,
    AUTH,
    AUTOSCALER,
    CONTROLLER,
    EVENT_HANDLERS,
    FLEET,
    HISTORY,
    HTTP,
    PODS,
    REDIS,
    ROUTER,
    SETTINGS,
    SIGNER,
    STORE,
    TASKS,
)
from .auth import make_authenticator
from .gateway import gateway
from .middleware import broker_page_headers, drop_identity_headers, request_id, send_request_id
from .runtime import build as build_runtime
from .security.access import AccessPolicy
from .security.signing import Signer
from .settings import Settings
from .waiting import WAITING_ROOM

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
CLIENT_MAX_SIZE = 1024 * 1024  # forms and JSON the broker itself reads; proxied bodies stream


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir)
        await embedded.start()
        url = embedded.url
    app[REDIS] = redis = connect_redis(url)
    try:
        yield
    finally:
        await redis.aclose()
        if embedded is not None:
            await embedded.stop()


def runtime_ctx(spec: FleetSpec):
    """The fleet's runtime (broker/runtime.py) under the app keys the handlers read."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        running = await adopt_spec(app[REDIS], spec)
        rt = build_runtime(settings, app[REDIS], running, owns_fleet=stop_pods_on_exit(settings))
        app[HTTP], app[PODS], app[STORE], app[FLEET] = rt.http, rt.pods, rt.store, rt.fleet
        app[CONTROLLER], app[ROUTER], app[ACTIVITY] = rt.controller, rt.router, rt.activity
        app[AUTOSCALER], app[HISTORY], app[WAITING_ROOM] = rt.autoscaler, rt.history, rt.room
        app[TASKS], app[EVENT_HANDLERS] = rt.tasks, rt.handlers
        app[presence.PRESENCE] = rt.presence
        try:
            await rt.start()
            yield
        finally:
            await rt.stop()

    return ctx


async def adopt_spec(redis: Redis, spec: FleetSpec) -> FleetSpec:
    """The spec to run: the applied one in Redis, or this file (see fleet.specstore)."""
    try:
        return await specstore.adopt(redis, spec)
    except StoreUnavailable as exc:
        log.warning("cannot read the applied fleet spec (%s); running SDB_FLEET", exc)
        return spec


def stop_pods_on_exit(settings: Settings) -> bool:
    if settings.stop_pods_on_exit is not None:
        return settings.stop_pods_on_exit
    return settings.redis_url is None  # embedded Redis: this broker owns the whole fleet


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[AUTH].startup(app)
    yield


def build_app(settings: Settings, spec: FleetSpec) -> web.Application:
    app = web.Application(
        middlewares=[request_id, drop_identity_headers, broker_page_headers],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"max_field_size": 16 * 1024, "max_line_size": 16 * 1024},
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(send_request_id)
    signer = app[SIGNER] = Signer(settings.secret())
    app[AUTH] = make_authenticator(settings, signer)
    app[ACCESS] = AccessPolicy.from_settings(settings)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    )
    app.cleanup_ctx.extend([redis_ctx, runtime_ctx(spec), auth_ctx])
    app.router.add_get("/_broker/healthz", pages.healthz)
    app.router.add_get("/_broker/readyz", pages.readyz)
    app[AUTH].add_routes(app)
    waiting.add_routes(app)
    ended.add_routes(app)
    chooser.add_routes(app)
    gallery.add_routes(app)
    home.add_routes(app)
    bar.add_routes(app)
    presence.add_routes(app)
    admin.add_routes(app)
    api.add_routes(app)
    app.router.add_get("/_broker/metrics", metrics.metrics_page)
    app.router.add_route("*", "/_broker/{tail:.*}", not_found)
    app.router.add_route("*", "/{tail:.*}", metrics.instrument(gateway))
    return app


async def not_found(request: web.Request) -> web.Response:
    return pages.problem(request, 404, "Not found", "There is no broker page at this address.")
