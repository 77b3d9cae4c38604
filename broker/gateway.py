"""The catch-all handler: every path outside /_broker/ belongs to the user's WebUI.

identity -> route (cache or one Lua call) -> proxy (HTTP, SSE or WebSocket).
WebSocket upgrades pass the very same identity check as plain requests.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from fleet import REDIS_DOWN, Waiting

from .appkeys import ACTIVITY, AUTH, FLEET, HTTP, ROUTER, SETTINGS
from .headers import upstream_headers
from .pages import problem, unauthenticated, waiting
from .proxy import PodTimeout, PodUnreachable, proxy_http, proxy_websocket

log = logging.getLogger(__name__)


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET"


async def gateway(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    identity = await app[AUTH].identify(request)
    if identity is None:
        return unauthenticated(request)
    router = app[ROUTER]
    try:
        result = await router.route(identity.user)
    except REDIS_DOWN:
        log.warning("Redis unreachable while routing %s", identity.user)
        return problem(
            request,
            503,
            "Temporarily unavailable",
            "The broker cannot reach its database. Retrying shortly.",
            retry_after=5,
        )
    if isinstance(result, Waiting):
        return waiting(request, result)

    activity = app[ACTIVITY]
    activity.saw(identity.user)
    trusted = settings.is_trusted_proxy(request.remote)
    websocket = is_websocket(request)
    headers = upstream_headers(request, identity, trusted_peer=trusted, websocket=websocket)
    try:
        if websocket:
            return await proxy_websocket(
                request,
                app[HTTP],
                result.addr,
                headers,
                on_client_message=lambda _msg: activity.saw(identity.user),
                connect_timeout=settings.proxy_connect_timeout,
            )
        return await proxy_http(
            request,
            app[HTTP],
            result.addr,
            headers,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.proxy_connect_timeout,
                sock_read=settings.proxy_read_timeout,
            ),
        )
    except PodUnreachable as exc:
        router.forget(identity.user)
        ended = await app[FLEET].pod_unreachable(result)
        log.warning(
            "pod %s of %s unreachable (%s); claim ended: %s", result.pod, identity.user, exc, ended
        )
        return problem(
            request,
            502,
            "Your WebUI stopped",
            "Your WebUI is not answering any more. Your outputs are kept. Reload to get a fresh WebUI."
            if ended
            else "Your WebUI did not answer. Try again in a moment.",
        )
    except PodTimeout:
        return problem(
            request,
            504,
            "Your WebUI is not answering",
            "The WebUI took too long to answer. Try again.",
        )
