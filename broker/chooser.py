"""The profile chooser: with several profiles (say T4 and L4), people pick one.

Shown on a first visit when the fleet has more than one profile, and
remembered per user in Redis (keys.profile_choice), so every broker
replica and every later visit use it; `Fleet.claim` reads it. With one
profile there is no chooser and no extra Redis read. People can come back
to /_broker/choose any time; a new choice applies to their next session.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from .admission import authenticate
from .appkeys import FLEET, ROUTER, SETTINGS, SIGNER, STORE
from .csrf import CSRF_FIELD, attach_csrf_cookie, csrf_ok, csrf_token
from .identity import Identity
from .pages import problem, wants_html
from .redirects import safe_next

CHOOSE_PATH = "/_broker/choose"


async def needs_choice(request: web.Request, user: str, target: str) -> web.StreamResponse | None:
    """None when the user's profile is settled; else the way to the chooser.

    Settled: one profile only, a remembered choice that still exists, or a
    session already running (whatever profile it has).
    """
    app = request.app
    profiles = app[FLEET].spec.profiles
    if len(profiles) < 2:
        return None
    store = app[STORE]
    chosen = await store.choice(user)
    if chosen and any(p.name == chosen for p in profiles):
        return None
    if await store.lookup(user) is not None:
        return None
    where = f"{CHOOSE_PATH}?{urlencode({'next': target})}"
    if wants_html(request) and request.method == "GET":
        raise web.HTTPFound(where)
    return web.json_response(
        {
            "error": "Choose a profile",
            "detail": "This site has several kinds of WebUI; choose one first.",
            "choose": where,
            "profiles": [p.name for p in profiles],
        },
        status=409,
    )


async def choose_page(request: web.Request) -> web.StreamResponse:
    """GET: each profile with its GPU and how many WebUIs are free right now."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    store = app[STORE]
    options = []
    for profile in app[FLEET].spec.profiles:
        counts = await store.counts(profile.name)
        options.append({"profile": profile, "free": counts["ready"], "queue": counts["queue"]})
    claim = await store.lookup(identity.user)
    context = {
        "options": options,
        "chosen": await store.choice(identity.user),
        "current": claim.profile if claim else None,
        "next": safe_next(request.query.get("next")),
        "identity": identity,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request, app[SIGNER], user=identity.user),
    }
    response = aiohttp_jinja2.render_template("choose.html", request, context)
    attach_csrf_cookie(request, response)
    return response


async def choose(request: web.Request) -> web.StreamResponse:
    """POST: remember the choice (leaving the queue of the old one) and go on."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    form = await request.post()
    if not csrf_ok(request, app[SIGNER], str(form.get(CSRF_FIELD, "")), user=identity.user):
        return problem(request, 403, "Form expired", "Reload the page and choose again.")
    name = str(form.get("profile", ""))
    if not any(p.name == name for p in app[FLEET].spec.profiles):
        return problem(request, 400, "Unknown profile", f"There is no profile {name!r}.")
    store = app[STORE]
    previous = await store.choice(identity.user)
    await store.set_choice(identity.user, name, app[SETTINGS].choice_ttl)
    if previous and previous != name:
        await store.leave_queue(identity.user, previous)
    app[ROUTER].forget(identity.user)
    raise web.HTTPSeeOther(safe_next(str(form.get("next", "/"))))


def add_routes(app: web.Application) -> None:
    app.router.add_get(CHOOSE_PATH, choose_page)
    app.router.add_post(CHOOSE_PATH, choose)
