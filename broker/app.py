"""Build the aiohttp application: clients in cleanup contexts, routes, middlewares.

Start-up order (reversed on shutdown): Redis (embedded when no URL), the fleet
(store, backend, controller, event listener, activity flusher), then the
authenticator. Constructors only store; the contexts do the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.asyncio import Redis

from fleet import (
    REDIS_DOWN,
    Autoscaler,
    Controller,
    EmbeddedRedis,
    Fleet,
    FleetSpec,
    FleetStore,
    History,
    Tasks,
    connect_redis,
    listen,
    make_backend,
    stop_fleet,
)
from fleet.specstore import adopt
from reaper import ReapCycle, ReaperJob, count_reclaim

from . import admin, api, chooser, ended, gallery, metrics, pages, waiting
from .access import AccessPolicy
from .activity import ActivityRecorder
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
    SCHEDULER,
    SETTINGS,
    SIGNER,
    STORE,
    TASKS,
)
from .auth import make_authenticator
from .fleetops import fleetops_ctx
from .gateway import gateway
from .middleware import broker_page_headers, drop_identity_headers
from .routing import Router
from .settings import Settings
from .signing import Signer
from .upstream import PodPool

log = logging.getLogger(__name__)
POD_KEEPALIVE = 60.0  # seconds an idle connection to a pod is kept for reuse
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


def fleet_ctx(spec: FleetSpec):  # noqa: ANN201 - an aiohttp cleanup context
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=POD_KEEPALIVE
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        app[HTTP] = http
        app[PODS] = pods = PodPool(keepalive=POD_KEEPALIVE)
        store = FleetStore(app[REDIS])
        running = await adopt_spec(app[REDIS], spec)
        backend = make_backend(running, settings.data_dir)
        await backend.start()
        fleet = Fleet(store, backend, running, http, queue_grace=settings.queue_grace)
        autoscaler = app[AUTOSCALER] = Autoscaler(app[REDIS], lambda: fleet.spec)
        app[HISTORY] = History(app[REDIS])
        controller = Controller(
            store,
            backend,
            lambda: fleet.spec,
            http,
            interval=settings.controller_interval,
            sizes=autoscaler.effective,
            queue_grace=settings.queue_grace,
        )
        router = Router(fleet, ttl=settings.route_cache_ttl)
        activity = ActivityRecorder(store)
        app[STORE], app[FLEET], app[CONTROLLER], app[ROUTER], app[ACTIVITY] = (
            store,
            fleet,
            controller,
            router,
            activity,
        )

        def wake_controller(kind: str, args: list[str]) -> None:
            if kind in ("claim", "release", "queue"):
                controller.scale_soon()  # counts changed: a light pass, gathered over a burst
            elif kind in ("scale", "spec"):
                controller.wake()

        tasks = app[TASKS] = Tasks()
        tasks.start("controller", controller.run)
        handlers = app[EVENT_HANDLERS] = [router.on_event, wake_controller]  # others add more

        def reconnected() -> None:  # events may have been missed: caches start over
            router.clear()
            for handler in handlers:
                handler("reconnect", [])

        tasks.start("events", lambda: listen(app[REDIS], handlers, on_reconnect=reconnected))
        scheduler = app[SCHEDULER] = AsyncIOScheduler()
        scheduler.add_job(
            activity.flush, "interval", seconds=settings.activity_flush, id="activity-flush"
        )
        reaper = ReaperJob(
            ReapCycle(
                store,
                lambda: fleet.spec,
                http,
                backend=backend,
                settle=settings.activity_flush,
                missed_probes=settings.reap_missed_probes,
            ),
            interval=settings.reap_interval,
        )
        if settings.reap_interval > 0:  # 0: a CronJob (python -m reaper --once) reaps instead
            reaper.schedule(scheduler)
        controller.on_reclaim = count_reclaim
        scheduler.start()
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            await reaper.stop()
            await activity.flush()
            await tasks.stop()
            if stop_pods_on_exit(settings):
                await stop_fleet(store, backend, fleet.spec)
            await backend.close()
            pods.close()
            await http.close()

    return ctx


async def adopt_spec(redis: Redis, spec: FleetSpec) -> FleetSpec:
    """The spec to run: the applied one in Redis, or this file (see fleet.specstore)."""
    try:
        return await adopt(redis, spec)
    except REDIS_DOWN as exc:
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
        middlewares=[drop_identity_headers, broker_page_headers],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"max_field_size": 16 * 1024, "max_line_size": 16 * 1024},
    )
    app[SETTINGS] = settings
    signer = app[SIGNER] = Signer(settings.secret())
    app[AUTH] = make_authenticator(settings, signer)
    app[ACCESS] = AccessPolicy.from_settings(settings)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    )
    app.cleanup_ctx.extend([redis_ctx, fleet_ctx(spec), fleetops_ctx, auth_ctx])
    app.router.add_get("/_broker/healthz", pages.healthz)
    app.router.add_get("/_broker/readyz", pages.readyz)
    app[AUTH].add_routes(app)
    waiting.add_routes(app)
    ended.add_routes(app)
    chooser.add_routes(app)
    gallery.add_routes(app)
    admin.add_routes(app)
    api.add_routes(app)
    app.router.add_get("/_broker/metrics", metrics.metrics_page)
    app.router.add_route("*", "/_broker/{tail:.*}", not_found)
    app.router.add_route("*", "/{tail:.*}", metrics.instrument(gateway))
    return app


async def not_found(request: web.Request) -> web.Response:
    return pages.problem(request, 404, "Not found", "There is no broker page at this address.")
