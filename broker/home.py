"""The person's home, ``/_broker/``: who they are, their WebUI's clock, and its levers.

JupyterHub's "Stop My Server", for a GPU: the page shows who is logged in,
how long the WebUI may stay idle before the reaper gives its GPU back (or
that it is generating), the time left under max_session, where the images
are (the gallery, no GPU needed), a way to switch kind (the chooser) and to
log out. **Stop my WebUI** ends the claim now, through the same function as
an admin's reclaim (`reaper.end_session`), with reason "stopped": the pod is
deleted (single-use), the outputs stay on the volume, and the notice it
leaves makes the open tab's polling a 409 while the next page load starts a
new session without the ended page (broker/ended.py).

Nothing here touches activity: reading or polling this page keeps no pod
alive. The broker adds nothing to the WebUI's own pages unless the profile
asks for its bar (`overlay: true`, broker/proxy/overlay.py and broker/bar.py,
which link here); otherwise the WebUI reaches this page by its address, and
every broker page links here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict, dataclass

from aiohttp import web

from fleet import SettingsStore, StoreUnavailable, slugify
from reaper import Reason, end_session

from .admission import authenticate
from .appkeys import AUTH, FLEET, ROUTER, SETTINGS, STORE
from .forms import checked_form, form_page
from .identity import Identity
from .metrics import redis_error
from .origin import cross_site
from .pages import problem
from .presence import PRESENCE_PATH

log = logging.getLogger(__name__)
HOME_PATH = "/_broker/"
STATUS_PATH = "/_broker/status"
STOP_PATH = "/_broker/stop"
OWN_LOGOUT = "/_broker/logout"


@dataclass(frozen=True, slots=True)
class Status:
    """The user's WebUI as the home page shows it; seconds, None when it does not apply."""

    running: bool
    profile: str = ""
    generating: bool = False
    idle_left: float | None = None
    idle_timeout: float | None = None
    session_left: float | None = None
    stopped: bool = False  # no WebUI because the user stopped it (their unread notice says so)


async def status_of(app: web.Application, user: str) -> Status:
    """Where the user's session stands: idle time counts from their last recorded action
    or claim, whichever is later, as the reaper counts it (reaper/policy.py, idle_seconds);
    busy is what the reaper's last probe found (keys.BUSY)."""
    store, spec = app[STORE], app[FLEET].spec
    claim = await store.lookup(user)
    if claim is None:
        notice = await store.unread_ended(user)
        return Status(running=False, stopped=bool(notice and notice.get("reason") == "stopped"))
    last, busy = await store.activity_of(user)
    now = time.time()
    since = max(last or 0.0, claim.since)
    limit = spec.session_limit(claim.profile)
    return Status(
        running=True,
        profile=claim.profile,
        generating=busy,
        idle_left=max(0.0, spec.idle_timeout - (now - since)),
        idle_timeout=spec.idle_timeout,
        session_left=None if limit is None else max(0.0, limit - (now - claim.since)),
    )


async def home_page(request: web.Request) -> web.StreamResponse:
    """GET /_broker/: the control bar, as a page."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    try:
        status = await status_of(app, identity.user)
    except StoreUnavailable:
        redis_error()
        return problem(request, 503, "Temporarily unavailable",
                       "The broker cannot reach its database. Try again shortly.", retry_after=5)  # fmt: skip
    spec = app[FLEET].spec
    names = {p.name: p.display_name for p in spec.profiles}
    context = {
        "settings_came": await settings_came(app, identity.user, status),
        "identity": identity,
        "status": status,
        "kind": names.get(status.profile, status.profile),
        "several": len(spec.profiles) > 1,
        "own_logout": app[AUTH].logout_url == OWN_LOGOUT,
        "logout_url": app[AUTH].logout_url,
        "stop": STOP_PATH,
        "status_url": STATUS_PATH,
        "presence_url": PRESENCE_PATH,
    }
    return form_page(request, "home.html", context, user=identity.user)


async def settings_came(app: web.Application, user: str, status: Status) -> bool:
    """Whether to tell the person when their kept A1111 styles and UI defaults apply: a
    running A1111 reads styles.csv only on the Styles refresh button and ui-config.json
    only at Settings > Reload UI (fleet/webui_settings.py cites A1111 v1.10.1), so a
    restored one is not on screen until then. Only when their profile keeps settings and
    something of the two is kept for them (said with a running WebUI only)."""
    fleet = app[FLEET]
    if not status.running:
        return False
    profile = next((p for p in fleet.spec.profiles if p.name == status.profile), None)
    if profile is None or not profile.keep_settings or profile.probe != "a1111":
        return False
    root, slug = os.path.split(fleet.backend.outputs_path(slugify(user)))
    try:
        store = SettingsStore(root, slug, "a1111")
    except ValueError:  # SettingsError: a slug no folder can have
        return False
    return await asyncio.to_thread(store.holds, "styles.csv", "ui-config.json")


async def status_json(request: web.Request, *, who: bool = False) -> web.StreamResponse:
    """GET /_broker/status: the same figures for the page's live countdown, never cached.
    `who`: with who is logged in and this page's address, as the bar shows them
    (/_broker/overlay.json, broker/bar.py)."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    try:
        status = await status_of(request.app, identity.user)
    except StoreUnavailable:
        redis_error()
        return problem(request, 503, "Temporarily unavailable",
                       "The broker cannot reach its database.", retry_after=5)  # fmt: skip
    body = {"user": identity.user, "home": HOME_PATH} if who else {}
    return web.json_response(body | asdict(status), headers={"Cache-Control": "no-store"})


async def stop(request: web.Request) -> web.StreamResponse:
    """POST /_broker/stop: end the user's claim now ("stopped"); with then=logout, log out too.

    Refused with 403 without this browser's CSRF token for this user, and when
    the browser says the form came from another site (Origin, Sec-Fetch-Site).
    """
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    settings = app[SETTINGS]
    refused = cross_site(request, websocket=False, public_url=settings.public_url,
                         allowed=frozenset())  # fmt: skip
    if refused is not None:
        log.warning("refused a cross-site stop for %s (%s)", identity.user, refused)
        return problem(request, 403, "Blocked: sent from another site",
                       "Stop your WebUI from this site's own page, /_broker/.")  # fmt: skip
    form = await checked_form(
        request, user=identity.user, again="Reload the page and press the button again."
    )
    if isinstance(form, web.StreamResponse):
        return form
    try:
        stopped = await end_session(app[STORE], identity.user, Reason.STOPPED, by=identity.user)
    except StoreUnavailable:
        redis_error()
        return problem(request, 503, "Temporarily unavailable",
                       "The broker cannot reach its database. Try again shortly.", retry_after=5)  # fmt: skip
    app[ROUTER].forget(identity.user)
    if stopped:
        log.info("%s stopped their WebUI", identity.user)
    if form.get("then") == "logout" and app[AUTH].logout_url == OWN_LOGOUT:
        logout = getattr(app[AUTH], "logout", None)  # dev and oidc serve their own logout
        if logout is not None:
            return await logout(request)
    raise web.HTTPSeeOther(HOME_PATH)


def add_routes(app: web.Application) -> None:
    app.router.add_get(HOME_PATH, home_page)
    app.router.add_get(STATUS_PATH, status_json)
    app.router.add_post(STOP_PATH, stop)
