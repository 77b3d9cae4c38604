"""The catch-all handler: every path outside /_broker/ belongs to the user's WebUI.

identity -> access (allow lists) -> route (cache or one Lua call) -> proxy
(HTTP, SSE or WebSocket). WebSocket upgrades pass the very same checks as
plain requests.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from fleet import ActivityClassifier, Claim, StoreUnavailable, Waiting, classifier_for

from . import chooser, logs, waiting
from .activity import ActivityRecorder
from .admission import authenticate
from .appkeys import ACTIVITY, FLEET, HTTP, PODS, ROUTER, SETTINGS
from .blocked import held_back
from .ended import session_ended
from .identity import Identity
from .metrics import redis_error
from .origin import cross_site
from .pages import problem, wants_html
from .presence import PRESENCE, holds_tab
from .proxy import (
    BodyStalled,
    BrokerBusy,
    PodBadAnswer,
    PodTimeout,
    PodUnreachable,
    ask_for_page,
    is_page_navigation,
    proxy_http,
    proxy_websocket,
    relay_page,
    upstream_headers,
)

log = logging.getLogger(__name__)


def client_activity(activity: ActivityRecorder, user: str) -> Callable[[], None]:
    """A text or binary message from the browser is activity (pings are not a person);
    the pod's messages never reach this callback."""
    return lambda: activity.saw(user)


@functools.cache
def _allowed(origins: tuple[str, ...]) -> frozenset[str]:
    return frozenset(origins)


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET"


@functools.cache
def proxy_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


def forward(
    request: web.Request,
    identity: Identity,
    addr: str,
    *,
    websocket: bool,
    rules: ActivityClassifier,
    page: bool = False,
) -> Awaitable[web.StreamResponse]:
    """The proxying to start. A plain function, so that the headers it builds are
    held by the proxy alone, which lets them go once a WebSocket is set up. `page`:
    a page navigation that gets the broker's bar (broker/proxy/overlay.py)."""
    app = request.app
    settings = app[SETTINGS]
    headers = upstream_headers(
        request,
        identity,
        trusted_peer=settings.is_trusted_proxy(request.remote),
        websocket=websocket,
        identity_headers=(
            settings.auth_header,
            settings.auth_email_header,
            settings.auth_groups_header,
        ),
    )
    if websocket:
        counts = rules.counts_ws(request.path)
        return proxy_websocket(
            request,
            app[HTTP],
            addr,
            headers,
            on_client_frame=client_activity(app[ACTIVITY], identity.user) if counts else None,
            timeout=proxy_timeout(settings.proxy_connect_timeout, settings.proxy_read_timeout),
        )
    if page:
        ask_for_page(headers)
    return proxy_http(
        request,
        app[PODS],
        addr,
        headers,
        connect_timeout=settings.proxy_connect_timeout,
        read_timeout=settings.proxy_read_timeout,
        body_timeout=settings.client_timeout,
        relay=functools.partial(relay_page, max_page=settings.overlay_max_page) if page else None,
    )


async def _carry(
    request: web.Request,
    identity: Identity,
    addr: str,
    *,
    websocket: bool,
    rules: ActivityClassifier,
    page: bool = False,
) -> web.StreamResponse:
    """Proxy it; a connection a tab holds for its life (broker/presence.py) counts as
    the user's open tab while it lasts."""
    if holds_tab(request.method, request.path, websocket=websocket):
        with request.app[PRESENCE].tab(identity.user):
            return await forward(request, identity, addr, websocket=websocket, rules=rules)
    return await forward(request, identity, addr, websocket=websocket, rules=rules, page=page)


async def _before_a_claim(request: web.Request, identity: Identity) -> web.StreamResponse | None:
    """What a request without a cached route may be answered before anything is claimed:
    the site closed, the person blocked, their session ended unread, a kind to choose."""
    closed = await chooser.closed_site(request, identity)
    if closed is not None:
        return closed
    held = await held_back(request, identity)
    if held is not None:
        return held
    return await chooser.needs_choice(request, identity, request.path_qs)


async def gateway(request: web.Request) -> web.StreamResponse:
    app = request.app
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    settings = app[SETTINGS]
    refused = cross_site(
        request,
        websocket=is_websocket(request),
        public_url=settings.public_url,
        allowed=_allowed(tuple(settings.allowed_origins)),
    )
    if refused is not None:
        log.warning("refused a cross-site %s %s for %s (%s)",
                    request.method, request.path, identity.user, refused)  # fmt: skip
        return problem(
            request,
            403,
            "Blocked: sent from another site",
            "This request to your WebUI came from another web site, so it was not passed on. "
            "Open your WebUI from this site's own address.",
        )
    router = app[ROUTER]
    try:
        if router.cached(identity.user) is None:
            before = await _before_a_claim(request, identity)
            if before is not None:
                return before
        result = await router.route(identity.user, groups=identity.groups)
    except StoreUnavailable:
        redis_error()
        log.warning("Redis unreachable while routing %s", identity.user)
        return problem(
            request,
            503,
            "Temporarily unavailable",
            "The broker cannot reach its database. Retrying shortly.",
            retry_after=5,
        )
    if isinstance(result, Waiting):
        return await waiting.respond(request, identity, result)
    logs.bind(pod=result.pod, profile=result.profile)

    activity = app[ACTIVITY]
    rules = classifier_for(app[FLEET].spec, result.profile)
    websocket = is_websocket(request)
    if not websocket and rules.counts(request.method, request.path, navigation=wants_html(request)):
        activity.saw(identity.user)
    # The bar goes into page loads of a profile that asks for it (fleet.yaml `overlay`).
    page = not websocket and is_page_navigation(request) and app[FLEET].spec.overlay(result.profile)
    try:
        return await _carry(
            request, identity, result.addr, websocket=websocket, rules=rules, page=page
        )
    except PodUnreachable as exc:
        return await _pod_unreachable(request, identity, result, exc)
    except PodBadAnswer as exc:
        log.warning("pod %s of %s sent a bad answer: %s", result.pod, identity.user, exc)
        return problem(
            request,
            502,
            "Your WebUI sent a broken answer",
            "Your WebUI answered with something that is not valid HTTP, so it was not passed "
            "on. Try again; if it keeps happening, an extension in your WebUI may be at fault.",
        )
    except PodTimeout:
        return problem(
            request,
            504,
            "Your WebUI is not answering",
            "The WebUI took too long to answer. Try again.",
        )
    except BodyStalled as exc:
        log.info("upload of %s to %s stalled: %s", identity.user, result.pod, exc)
        response = problem(
            request,
            408,
            "Upload stopped",
            "Your browser stopped sending the upload, so it was not passed on. Try again.",
        )
        response.force_close()  # the rest of the body is not waited for
        return response
    except BrokerBusy as exc:
        log.error("broker out of resources while proxying for %s: %s", identity.user, exc)
        return problem(
            request,
            503,
            "Busy",
            "The broker is overloaded right now. Try again shortly.",
            retry_after=5,
        )


async def _pod_unreachable(
    request: web.Request, identity: Identity, claim: Claim, exc: PodUnreachable
) -> web.StreamResponse:
    """The user's pod refused the connection: end the claim when the pod is gone.

    A page load then gets the ended page straight away (why, and the Start
    button: the notice end_pod left); a reload while a second process still
    cached the dead route would only have repeated the 502.
    """
    app = request.app
    app[ROUTER].forget(identity.user)
    try:
        claim_ended = await app[FLEET].pod_unreachable(claim)
        page = claim_ended and wants_html(request)
        ended = await session_ended(request, identity.user) if page else None
    except StoreUnavailable:
        redis_error()
        claim_ended, ended = False, None
    log.warning(
        "pod %s of %s unreachable (%s); claim ended: %s", claim.pod, identity.user, exc, claim_ended
    )
    if ended is not None:
        ended.set_status(502)
        return ended
    return problem(
        request,
        502,
        "Your WebUI stopped",
        "Your WebUI is not answering any more. Your outputs are kept. Reload this page to "
        "start a new one."
        if claim_ended
        else "Your WebUI did not answer. Try again in a moment.",
    )
