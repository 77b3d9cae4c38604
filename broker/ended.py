"""The "session ended" notice, and the button that starts the next session.

Every way a session ends leaves a notice (keys.ended) for the user. While it
is unread and the user holds no claim:

- a page load shows ended.html: why and after how long, that the outputs are
  kept, what a new WebUI means right now (one free, or a place in line), and a
  "Start a new WebUI" button. Showing it claims nothing and it never goes on
  by itself: a page that re-claimed on its own put people who had walked away
  in line, where they kept a pod warm for nobody (issue 17, items 1 and 4);
- a request that is not user activity (an open tab's polling) gets 409.

The button posts to START_PATH (CSRF-checked), which reads the notice and
sends the user on; the gateway then claims as for anybody. A user who holds
a claim already (a newer session) is routed to it: the notice only stops a
NEW claim (item 8).
"""

from __future__ import annotations

from aiohttp import web

from fleet import SessionEnded, StoreUnavailable, classifier_for

from .admission import authenticate
from .appkeys import FLEET, ROUTER, STORE
from .forms import checked_form, form_page
from .identity import Identity
from .metrics import redis_error
from .pages import problem, wants_html
from .security.redirects import safe_next

START_PATH = "/_broker/start"
ENDED_DETAIL = {
    "idle": "Your session ended after {idle} without activity; its GPU went back to the pool.",
    "max_session": "Your session reached its {limit} limit, set by this site's admin; "
    "its GPU went back to the pool.",
    "dead": "Your WebUI stopped working.",
    "node_lost": "The machine your WebUI ran on stopped answering, so it was replaced.",
    "admin": "An administrator ended your session.",
    "stopped": "You stopped your WebUI.",
    "gone": "Your session ended when no tab had shown your WebUI for a while (its last "
    "activity was {idle} before); its GPU went back to the pool.",
}


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def spoken(seconds: float) -> str:
    """A duration in words, never more than it was: 40 -> "40 seconds", 125 -> "2 minutes 5
    seconds", 930 -> "15 minutes", 5400 -> "1 hour 30 minutes"."""
    whole = max(0, int(seconds))
    if whole < 60:
        return _plural(whole, "second")
    if whole < 3600:
        mins, secs = divmod(whole, 60)
        rest = f" {_plural(secs, 'second')}" if secs and mins < 10 else ""
        return _plural(mins, "minute") + rest
    hours, mins = whole // 3600, whole % 3600 // 60
    return _plural(hours, "hour") + (f" {_plural(mins, 'minute')}" if mins else "")


def _seconds(notice: dict[str, object], name: str) -> float:
    """`name`_seconds of a notice; notices written before it had only rounded minutes."""
    value = notice.get(f"{name}_seconds")
    if isinstance(value, int | float):
        return float(value)
    minutes = notice.get(f"{name}_minutes")
    return float(minutes) * 60 if isinstance(minutes, int | float) else 0.0


def limit_words(seconds: float) -> str:
    """A max_session as an adjective: 43200 -> "12-hour", 5400 -> "90-minute"."""
    whole = max(1, int(seconds))
    for size, unit in ((3600, "hour"), (60, "minute")):
        if whole % size == 0:
            return f"{whole // size}-{unit}"
    return f"{whole}-second"


def explain(notice: dict[str, object]) -> str:
    """Why the session ended, in the notice's own figures."""
    template = ENDED_DETAIL.get(str(notice.get("reason")), ENDED_DETAIL["dead"])
    limit = notice.get("limit_seconds")  # notices written before it had none: "its time limit"
    known = float(limit) if isinstance(limit, int | float) and limit > 0 else None
    return template.format(
        idle=spoken(_seconds(notice, "idle")),
        session=spoken(_seconds(notice, "session")),
        limit=limit_words(known) if known is not None else "time",
    )


async def _outlook(request: web.Request, notice: dict[str, object]) -> str:
    """What pressing the button leads to right now, in one sentence."""
    fleet = request.app[FLEET]
    try:
        profile = fleet.spec.profile(str(notice.get("profile") or fleet.default_profile().name))
    except KeyError:
        return "Press the button when you want a new WebUI."
    counts = await request.app[STORE].counts(profile.name)
    if counts["ready"] > counts["queue"]:
        return f"A {profile.display_name} WebUI is free right now: the button takes you into it."
    return (
        f"No {profile.display_name} WebUI is free right now: the button puts you in line, "
        "and the waiting page shows your place and an estimate."
    )


async def session_ended(
    request: web.Request, user: str, groups: tuple[str, ...] = ()
) -> web.StreamResponse | None:
    """The ended page or a 409 while the user's notice is unread and they hold no claim; else None.

    Asked only when the route cache holds no claim for the user. With one
    profile, a request that is not a page load is checked by the claim itself
    (claim.lua, unless_ended): the route is then cached for the caller, and
    the miss costs one Redis call, not two.
    """
    store = request.app[STORE]
    if wants_html(request):
        notice = await store.unread_ended(user)
        if notice is None:
            return None
        if notice.get("reason") == "stopped":  # the user's own Stop (broker/home.py): a page
            await store.pop_ended(user)  # load of theirs is asking for a WebUI again, so go on
            return None
        context = {
            "detail": explain(notice),
            "outlook": await _outlook(request, notice),
            "next": safe_next(request.path_qs),
            "start": START_PATH,
        }
        response = form_page(request, "ended.html", context, user=user)
        response.headers["Cache-Control"] = "no-store"
        return response
    fleet = request.app[FLEET]
    rules = classifier_for(fleet.spec, fleet.default_profile().name)
    if rules.counts(request.method, request.path):
        return None
    if len(fleet.spec.profiles) < 2:
        routed = await request.app[ROUTER].route(user, unless_ended=True, groups=groups)
        ended = isinstance(routed, SessionEnded)
    else:
        ended = await store.unread_ended(user) is not None
    if ended:
        return problem(
            request,
            409,
            "Your session ended",
            "Your WebUI was stopped. Your outputs are kept. Open this site in your browser "
            "and press Start a new WebUI to get a new one.",
        )
    return None


async def start_new(request: web.Request) -> web.StreamResponse:
    """POST START_PATH: the user asked for a new WebUI; the notice is read, on to `next`."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    form = await checked_form(
        request, user=identity.user, again="Reload the page and press the button again."
    )
    if isinstance(form, web.StreamResponse):
        return form
    try:
        await app[STORE].pop_ended(identity.user)
    except StoreUnavailable:
        redis_error()
        return problem(request, 503, "Temporarily unavailable",
                       "The broker cannot reach its database. Try again shortly.", retry_after=5)  # fmt: skip
    app[ROUTER].forget(identity.user)
    raise web.HTTPSeeOther(safe_next(str(form.get("next", "/"))))


def add_routes(app: web.Application) -> None:
    app.router.add_post(START_PATH, start_new)
