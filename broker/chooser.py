"""The profile chooser: with several profiles (say T4 and L4), people pick one.

Shown on a first visit when the fleet has more than one profile, and
remembered per user in Redis (keys.profile_choice), so every broker
replica and every later visit use it; `Fleet.claim` reads it. With one
profile there is no chooser and no extra Redis read. People can come back
to /_broker/choose any time; a new choice applies to their next session.

A profile with `allowed_groups` is for members of those groups only: the
chooser lists only the profiles open to the person, and a claim of another
one (a forged form, a choice remembered before the rule, the only profile
of the site) gets a 403 page saying which kind of WebUI is closed to them.
A session already running is left to run out.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from fleet import Profile

from .admission import authenticate
from .appkeys import FLEET, ROUTER, SETTINGS, STORE
from .forms import checked_form, form_page
from .identity import Identity
from .pages import problem, wants_html
from .security.redirects import safe_next

CHOOSE_PATH = "/_broker/choose"


def open_to(request: web.Request, identity: Identity) -> list[Profile]:
    """The profiles this person may use (their groups against each one's allowed_groups)."""
    return [p for p in request.app[FLEET].spec.profiles if p.allows(identity.groups)]


def not_allowed(request: web.Request, identity: Identity, profile: Profile | None) -> web.Response:
    """403: the kind of WebUI (or every kind) is closed to this person, and what to do."""
    what = f"{profile.display_name} WebUIs are" if profile else "No kind of WebUI here is"
    other = profile is not None and any(p != profile for p in open_to(request, identity))
    return problem(
        request,
        403,
        "Not open to you",
        f"{what} open only to some groups, and your account ({identity.user}) is in none "
        "of them. Ask this site's admin for access"
        + (f", or choose another kind at {CHOOSE_PATH}." if other else "."),
        profile=profile.name if profile else None,
    )


async def closed_site(request: web.Request, identity: Identity) -> web.Response | None:
    """With one profile: the 403 when it is closed to this person and they hold no session.

    Asked before anything that may claim (the ended check claims for a tab's
    polling on one-profile sites); costs a Redis read only for people refused.
    """
    profiles = request.app[FLEET].spec.profiles
    if len(profiles) > 1 or profiles[0].allows(identity.groups):
        return None
    if await request.app[STORE].lookup(identity.user) is not None:
        return None  # a session from before the rule runs to its end
    return not_allowed(request, identity, profiles[0])


async def needs_choice(
    request: web.Request, identity: Identity, target: str
) -> web.StreamResponse | None:
    """None when the user's profile is settled; else the way to the chooser, or a 403.

    Settled: one profile only, a remembered choice that still exists, or a
    session already running (whatever profile it has); the profile must be
    open to the user's groups, a running session excepted.
    """
    app = request.app
    profiles = app[FLEET].spec.profiles
    user = identity.user
    allowed = open_to(request, identity)
    if len(profiles) < 2:
        return await closed_site(request, identity)
    store = app[STORE]
    chosen = await store.choice(user)
    if chosen and any(p.name == chosen for p in allowed):
        return None
    if await store.lookup(user) is not None:
        return None
    if not allowed:
        return not_allowed(request, identity, None)
    where = f"{CHOOSE_PATH}?{urlencode({'next': target})}"
    if wants_html(request) and request.method == "GET":
        raise web.HTTPFound(where)
    return web.json_response(
        {
            "error": "Choose a profile",
            "detail": "This site has several kinds of WebUI; choose one first.",
            "choose": where,
            "profiles": [p.name for p in allowed],
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
    allowed = open_to(request, identity)
    if not allowed:
        return not_allowed(request, identity, None)
    options = []
    for profile in allowed:
        counts = await store.counts(profile.name)
        options.append({"profile": profile, "free": counts["ready"], "queue": counts["queue"]})
    claim = await store.lookup(identity.user)
    context = {
        "options": options,
        "chosen": await store.choice(identity.user),
        "current": claim.profile if claim else None,
        "next": safe_next(request.query.get("next")),
        "identity": identity,
    }
    return form_page(request, "choose.html", context, user=identity.user)


async def choose(request: web.Request) -> web.StreamResponse:
    """POST: remember the choice (leaving the queue of the old one) and go on."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    form = await checked_form(
        request, user=identity.user, again="Reload the page and choose again."
    )
    if isinstance(form, web.StreamResponse):
        return form
    name = str(form.get("profile", ""))
    try:
        profile = app[FLEET].spec.profile(name)
    except KeyError:
        return problem(request, 400, "Unknown profile", f"There is no profile {name!r}.")
    if not profile.allows(identity.groups):
        return not_allowed(request, identity, profile)
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
