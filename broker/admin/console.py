"""The admin console: /_broker/admin and its POST actions.

Every action is a plain HTML form carrying a CSRF token that is checked
before anything else is read from it; after an action the browser is sent
back to the console (POST-redirect-GET) with a signed one-line result, so a
link cannot put words on an admin's screen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ..appkeys import FLEET, REDIS, SETTINGS, SIGNER, STORE
from ..forms import checked_form
from ..gpu_time import top_usage
from ..identity import Identity
from ..security.csrf import CSRF_FIELD, attach_csrf_cookie, csrf_token
from . import ops
from .chart import COLORS, chart
from .confirm import ConfirmPage, delete_page, reclaim_page
from .figures import ago, clock_in, figures, seconds
from .guard import require_admin
from .models import Done, SampleView
from .tokens import Tokens

CONSOLE = "/_broker/admin"
FLASH_AGE = 120.0
CHART_HOURS = 6.0
USAGE_HOURS = 24  # the usage tables' window: GET /api/v1/usage answers any other
USAGE_ROWS = 10  # biggest users and groups shown


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REFRESH = 5  # seconds between the console's in-place refreshes (?refresh=N: 1 to 60)


def _refresh(request: web.Request) -> int:
    value = request.query.get("refresh", "")
    return min(60, max(1, int(value))) if value.isdigit() else REFRESH


async def _live(app: web.Application) -> dict[str, Any]:
    """What both the page and its refresh show, read once."""
    profiles, sessions, pods, waiting = await asyncio.gather(
        ops.profiles(app), ops.sessions(app, busy=True), ops.pods(app), ops.queue(app)
    )
    now = app[STORE].clock()
    figs = figures(profiles, sessions, pods, waiting, now=now, timezone=app[FLEET].spec.timezone)
    return {
        "profiles": profiles,
        "sessions": sessions,
        "pods": pods,
        "waiting": waiting,
        "now": now,
        "figs": figs,
    }


async def console(request: web.Request) -> web.StreamResponse:
    who = await require_admin(request)
    if not isinstance(who, Identity):
        return who
    app = request.app
    day_ago = time.time() - USAGE_HOURS * 3600
    (live, reclaims, events, history, tokens), (by_user, by_group) = await asyncio.gather(
        asyncio.gather(
            _live(app),
            ops.reclaims(app),
            ops.other_events(app),
            ops.history(app, CHART_HOURS),
            Tokens(app[REDIS]).all(),
        ),
        asyncio.gather(
            top_usage(request, day_ago, time.time(), "user", USAGE_ROWS),
            top_usage(request, day_ago, time.time(), "group", USAGE_ROWS),
        ),
    )
    now = live["now"]
    current = {
        p.name: SampleView(
            at=now, warming=p.warming, ready=p.ready, claimed=p.claimed, queue=p.queue
        )
        for p in live["profiles"]
    }
    flash = app[SIGNER].verify("flash", request.query.get("r"), max_age=FLASH_AGE)
    context: dict[str, Any] = {
        "who": who,
        **live,
        "reclaims": reclaims,
        "events": events,
        "usage": {"user": by_user, "group": by_group, "hours": USAGE_HOURS, "rows": USAGE_ROWS},
        "tokens": tokens,
        "charts": {
            h.profile: chart(h.samples, now=now, hours=CHART_HOURS, current=current.get(h.profile))
            for h in history
        },
        "colors": COLORS,
        "refresh": _refresh(request),
        "flash": flash,
        "timezone": app[FLEET].spec.timezone,
        "ago": ago,
        "seconds": seconds,
        "clock": clock_in(app[FLEET].spec.timezone),
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request, app[SIGNER], user=who.user),
    }
    response = aiohttp_jinja2.render_template("admin/console.html", request, context)
    attach_csrf_cookie(request, response)
    return response


async def _checked_form(
    request: web.Request,
) -> tuple[Identity, MultiDictProxy[Any]] | web.StreamResponse:
    """The admin and their form, or 403 when either the person or the CSRF token is wrong."""
    who = await require_admin(request)
    if not isinstance(who, Identity):
        return who
    form = await checked_form(
        request,
        user=who.user,
        again="This form is stale or was not sent from the console. Reload the console and try again.",
    )
    if isinstance(form, web.StreamResponse):
        return form
    return who, form


def _back(request: web.Request, done: Done) -> NoReturn:
    token = request.app[SIGNER].sign("flash", {"ok": done.ok, "m": done.detail})
    raise web.HTTPSeeOther(f"{CONSOLE}?r={token}")


def _number(form: MultiDictProxy[Any], name: str) -> int | None:
    value = str(form.get(name, "")).strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


async def reclaim(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    user, reason = str(form.get("user", "")), str(form.get("reason", ""))
    return _back(request, await ops.reclaim(request.app, user, who.user, reason))


def _confirming(page_of: ConfirmPage, field: str) -> Handler:
    """GET: the step before a reclaim or a delete, a page with the CSRF-checked form and a
    reason (broker/admin/confirm.py) for the user or pod named by the query's FIELD."""

    async def confirm(request: web.Request) -> web.StreamResponse:
        who = await require_admin(request)
        if not isinstance(who, Identity):
            return who
        page = await page_of(request, who, request.query.get(field, ""))
        return _back(request, page) if isinstance(page, Done) else page

    return confirm


confirm_reclaim = _confirming(reclaim_page, "user")
confirm_delete = _confirming(delete_page, "pod")


async def live_figures(request: web.Request) -> web.StreamResponse:
    """GET, admins only: the console's changing cells as JSON, for its refresh in place."""
    who = await require_admin(request)
    if not isinstance(who, Identity):
        return who
    return web.json_response((await _live(request.app))["figs"])


async def delete_pod(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    pod, reason = str(form.get("pod", "")), str(form.get("reason", ""))
    return _back(request, await ops.delete_pod(request.app, pod, who.user, reason))


async def sizes(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    profile = str(form.get("profile", ""))
    try:
        if form.get("clear"):
            return _back(request, await ops.clear_sizes(request.app, profile, who.user))
        buffer = str(form.get("buffer", "")).strip() or None
        done = await ops.set_sizes(
            request.app,
            profile,
            who.user,
            buffer=int(buffer) if buffer and buffer.isdigit() else buffer,
            min=_number(form, "min"),
            max=_number(form, "max"),
        )
    except ValueError as exc:
        done = Done(ok=False, detail=str(exc))
    except KeyError:
        done = Done(ok=False, detail=f"no profile {profile!r}")
    return _back(request, done)


#: A form's `scope` (older scripts) as scopes; the console's own form sends `scopes` boxes.
TOKEN_CHOICES: dict[str, tuple[str, ...]] = {
    "admin": ("read", "sessions", "fleet", "tokens"),
    "read": ("read",),
    "sessions": ("read", "sessions"),
    "fleet": ("read", "fleet"),
}


async def create_token(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    new = await Tokens(request.app[REDIS]).create(
        str(form.get("name", "")),
        who,
        ttl=request.app[SETTINGS].api_token_ttl,
        scopes=[str(v) for v in form.getall("scopes", [])]
        or TOKEN_CHOICES.get(str(form.get("scope", "admin")), ("read",)),
    )
    await request.app[STORE].audit(action="token_create", token=new.id, by=who.user)
    return aiohttp_jinja2.render_template("admin/token.html", request, {"new": new, "who": who})


async def revoke_token(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    token_id = str(form.get("id", ""))
    revoked = await Tokens(request.app[REDIS]).revoke(token_id)
    if revoked:
        await request.app[STORE].audit(action="token_revoke", token=token_id, by=who.user)
    return _back(
        request,
        Done(ok=revoked, detail=f"token {token_id} revoked" if revoked else f"no token {token_id}"),
    )


async def log_out(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    return _back(request, await ops.log_out(request.app, str(form.get("user", "")), who.user))


def add_routes(app: web.Application) -> None:
    app.router.add_get(CONSOLE, console)
    app.router.add_get(f"{CONSOLE}/figures", live_figures)
    app.router.add_get(f"{CONSOLE}/reclaim", confirm_reclaim)
    app.router.add_get(f"{CONSOLE}/delete-pod", confirm_delete)
    app.router.add_post(f"{CONSOLE}/reclaim", reclaim)
    app.router.add_post(f"{CONSOLE}/logout", log_out)
    app.router.add_post(f"{CONSOLE}/delete-pod", delete_pod)
    app.router.add_post(f"{CONSOLE}/sizes", sizes)
    app.router.add_post(f"{CONSOLE}/tokens", create_token)
    app.router.add_post(f"{CONSOLE}/tokens/revoke", revoke_token)
