"""The admin console: /_broker/admin and its POST actions.

Every action is a plain HTML form carrying a CSRF token that is checked
before anything else is read from it; after an action the browser is sent
back to the console (POST-redirect-GET) with a signed one-line result, so a
link cannot put words on an admin's screen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ..appkeys import FLEET, REDIS, SETTINGS, SIGNER, STORE
from ..csrf import CSRF_FIELD, attach_csrf_cookie, csrf_token
from ..forms import checked_form
from ..identity import Identity
from . import ops
from .chart import chart
from .guard import require_admin
from .models import Done
from .tokens import Tokens

CONSOLE = "/_broker/admin"
FLASH_AGE = 120.0
CHART_HOURS = 6.0


def ago(seconds: float | None) -> str:
    """12s, 4m, 3h 05m: short enough for a table cell."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def clock_in(timezone: str) -> Callable[[float | None], str]:
    """Times as the fleet file's schedules read them: in the spec's timezone."""
    zone = ZoneInfo(timezone)

    def clock(at: float | None) -> str:
        return datetime.fromtimestamp(at, zone).strftime("%a %Y-%m-%d %H:%M:%S") if at else "-"

    return clock


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s" if value < 60 else ago(value)


async def console(request: web.Request) -> web.StreamResponse:
    who = await require_admin(request)
    if not isinstance(who, Identity):
        return who
    app = request.app
    # Nested: typeshed types a gather of up to six awaitables one by one (asyncio/tasks.pyi).
    (profiles, sessions, pods, waiting, reclaims, history), tokens = await asyncio.gather(
        asyncio.gather(
            ops.profiles(app),
            ops.sessions(app, busy=True),
            ops.pods(app),
            ops.queue(app),
            ops.reclaims(app),
            ops.history(app, CHART_HOURS),
        ),
        Tokens(app[REDIS]).all(),
    )
    now = app[STORE].clock()
    flash = app[SIGNER].verify("flash", request.query.get("r"), max_age=FLASH_AGE)
    context: dict[str, Any] = {
        "who": who,
        "profiles": profiles,
        "sessions": sessions,
        "pods": pods,
        "waiting": waiting,
        "reclaims": reclaims,
        "tokens": tokens,
        "charts": {h.profile: chart(h.samples, now=now, hours=CHART_HOURS) for h in history},
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
    return _back(request, await ops.reclaim(request.app, str(form.get("user", "")), who.user))


async def delete_pod(request: web.Request) -> web.StreamResponse:
    checked = await _checked_form(request)
    if not isinstance(checked, tuple):
        return checked
    who, form = checked
    return _back(request, await ops.delete_pod(request.app, str(form.get("pod", "")), who.user))


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
    app.router.add_post(f"{CONSOLE}/reclaim", reclaim)
    app.router.add_post(f"{CONSOLE}/logout", log_out)
    app.router.add_post(f"{CONSOLE}/delete-pod", delete_pod)
    app.router.add_post(f"{CONSOLE}/sizes", sizes)
    app.router.add_post(f"{CONSOLE}/tokens", create_token)
    app.router.add_post(f"{CONSOLE}/tokens/revoke", revoke_token)
