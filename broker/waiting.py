"""The waiting room: /_broker/wait and its live stream /_broker/events.

When no pod is free the user is in a FIFO queue per profile (claim.lua
decides who gets the next Ready pod). This module only shows the wait
honestly and ends it by itself:

- the page shows the position, an estimate (fleet.forecast) and progress,
  and opens an event stream; the stream tries the claim again whenever the
  fleet changes (a pod became ready, a session ended) and sends `ready`
  when the user has their pod, and the page goes on into the WebUI;
- an open stream keeps the user's place (FleetStore.see_waiting every
  tick); without one for SDB_QUEUE_GRACE the place is given up (the
  controller's next pass drops it and stops counting it toward the target),
  so a closed tab neither holds up everyone behind it nor keeps a pod warm.
  Reloading keeps the place;
- scripts get 503 with Retry-After and the same facts as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from fleet import (
    Autoscaler,
    Blocked,
    Claim,
    Eta,
    Event,
    Fleet,
    FleetStore,
    History,
    Kind,
    Limited,
    Outlook,
    Queued,
    Rebuilding,
    SessionEnded,
    StoreUnavailable,
    Waiting,
    estimate,
    place_of,
    read_outlook,
)

from .admission import authenticate
from .appkeys import FLEET, ROUTER, STORE
from .blocked import blocked_answer, blocked_page, held_back
from .chooser import needs_choice
from .identity import Identity
from .limits import limit_response
from .metrics import redis_error
from .pages import problem, wants_html
from .routing import Router
from .security.redirects import safe_next
from .streams import capped, event_stream

log = logging.getLogger(__name__)
WAIT_PATH = "/_broker/wait"
EVENTS_PATH = "/_broker/events"
TICK = 1.0  # seconds between position updates on an open stream
CLAIM_EVERY = 5.0  # a claim attempt at least this often, events or not
OUTLOOK_TTL = 1.0  # one outlook read per profile per second, however many people wait
WAKE_ON = {Kind.CLAIM, Kind.RELEASE, Kind.QUEUE, Kind.READY, Kind.REBUILD, Kind.SCALE, Kind.SPEC}


def describe(eta: Eta | None) -> str:
    """Words for an estimate: honest about being one, and about not having one."""
    if eta is None or eta.seconds is None:
        return "no estimate yet" if eta is None or eta.phase != "full" else "until someone leaves"
    s = eta.seconds
    if s < 5:
        return "any moment now"
    if s < 90:
        return f"about {int(round(s / 5) * 5)} seconds"
    if s < 5400:
        return f"about {round(s / 60)} minutes"
    return f"about {s / 3600:.1f} hours"


class WaitingRoom:
    """Per broker: wakes waiting streams on fleet events and shares outlook reads."""

    def __init__(
        self,
        fleet: Fleet,
        store: FleetStore,
        history: History,
        autoscaler: Autoscaler,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.history = history
        self.autoscaler = autoscaler
        self.clock = clock
        self._changed: dict[str, asyncio.Event] = {}
        self._outlooks: dict[str, tuple[float, Outlook]] = {}

    def on_event(self, event: Event) -> None:
        """Pub/sub handler: something changed for a profile (or all of them)."""
        if event.kind not in WAKE_ON:
            return
        names = [event.profile] if event.profile else list(self._changed)
        for name in names:
            self._outlooks.pop(name, None)
            woken = self._changed.pop(name, None)
            if woken is not None:
                woken.set()

    async def changed(self, profile: str, timeout: float) -> bool:
        """Wait until the profile changes or `timeout` passes; True when it changed."""
        event = self._changed.setdefault(profile, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: 3.11 can swallow a cancel
                await event.wait()
            return True
        return False

    async def outlook(self, profile: str) -> Outlook:
        now = self.clock()
        cached = self._outlooks.get(profile)
        if cached is not None and now - cached[0] < OUTLOOK_TTL:
            return cached[1]
        spec = self.fleet.spec
        sized = {p.name: p for p in await self.autoscaler.effective(spec)}
        outlook = await read_outlook(self.store, self.history, spec, sized[profile], now)
        self._outlooks[profile] = (now, outlook)
        return outlook

    async def status(self, result: Waiting) -> dict[str, Any]:
        """What the page shows: position, estimate, phase and a sentence."""
        if isinstance(result, Rebuilding):
            return {
                "position": 0,
                "queue": 0,
                "eta": None,
                "phase": "rebuilding",
                "estimate": "a moment",
                "message": "The broker is recovering its records; your WebUI will be back in a moment.",
            }
        eta: Eta | None = None
        position, queue = place_of(result)
        try:
            profile = self.fleet.spec.profile(result.profile)
            outlook = await self.outlook(result.profile)
            eta = estimate(outlook, position)
        except KeyError:
            return {"position": position, "queue": queue, "eta": None,
                    "phase": "starting", "estimate": describe(None), "message": "Waiting for a WebUI."}  # fmt: skip
        if eta.phase == "ready":
            message = "A WebUI is free for you; taking you there."
        elif outlook.failing:  # "no estimate yet" forever was all they read (issue 17, item 2)
            return {
                "position": position,
                "queue": queue,
                "eta": None,
                "phase": "failing",
                "estimate": "none: new WebUIs of this kind fail to start",
                "message": f"{profile.display_name} WebUIs are failing to start right now, so "
                "none may come soon. "
                + (
                    "Choose another kind, or wait while an administrator looks."
                    if len(self.fleet.spec.profiles) > 1
                    else "An administrator has to fix it; you may wait here or come back later."
                ),
            }
        elif eta.phase == "starting":
            message = f"A {profile.display_name} WebUI is starting for you."
        else:
            every = (
                f"The {profile.display_name} WebUI is"
                if outlook.max == 1
                else f"All {outlook.max} {profile.display_name} WebUIs are"
            )
            message = f"{every} in use. " + (
                "You get the next one that frees up."
                if position <= 1
                else f"You get one after the {position - 1} "
                f"{'person' if position == 2 else 'people'} ahead of you in line."
            )
        return {
            "position": position,
            "queue": queue,
            "eta": None if eta.seconds is None else round(eta.seconds, 1),
            "phase": eta.phase,
            "estimate": describe(eta),
            "message": message,
        }


WAITING_ROOM = web.AppKey("waiting_room", WaitingRoom)
#: Said while a person's place is further back than it was: in a line served by priority
#: (fleet.yaml's groups:), a newcomer of a higher priority goes ahead of people waiting.
WENT_BACK = " Your place went back: someone whose group is served first joined ahead of you."
#: Open /_broker/events streams per user, in this process. Each costs a few Redis
#: calls a second (300 of one user's made ~1,100 commands/s): a person has a few
#: tabs, not hundreds.
EVENT_STREAMS = web.AppKey("event_streams", Counter)
STREAMS_PER_USER = 4


async def respond(request: web.Request, identity: Identity, result: Waiting) -> web.StreamResponse:
    """The gateway's answer while the user waits: the wait page for people, 503 JSON otherwise
    (a group's limit: its page, 429 JSON; nobody waits in line for one)."""
    if isinstance(result, Limited):
        return limit_response(request, identity, result)
    if isinstance(result, Blocked):  # blocked after the broker's own check: claim.lua saw it
        return blocked_page(request)
    target = safe_next(request.path_qs)
    if wants_html(request) and request.method == "GET":
        raise web.HTTPFound(f"{WAIT_PATH}?{urlencode({'next': target})}")
    try:
        status = await request.app[WAITING_ROOM].status(result)
    except StoreUnavailable:
        redis_error()
        position, queue = place_of(result)
        status = {"position": position, "queue": queue, "eta": None}
    retry = 5 if status.get("eta") is None else int(min(60, max(2, status["eta"])))
    body = {
        "error": "No WebUI ready yet",
        "detail": status.get("message", "Waiting for a WebUI."),
        **status,
        "wait": f"{WAIT_PATH}?{urlencode({'next': target})}",
        "events": EVENTS_PATH,
    }
    return web.json_response(body, status=503, headers={"Retry-After": str(retry)})


async def wait_page(request: web.Request) -> web.StreamResponse:
    """GET /_broker/wait?next=/path: the waiting page (reloading it keeps the place)."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    target = safe_next(request.query.get("next"))
    choose = await needs_choice(request, identity, target)
    if choose is not None:
        return choose
    try:
        # An unread "session ended" notice: the ended page and its button, never a claim
        # (a bookmarked or reloaded waiting page must not start what the person ended).
        held = await held_back(request, identity)  # blocked, or an unread notice: no claim
        if held is not None:
            return held
        result = await request.app[ROUTER].route(identity.user, groups=identity.groups)
        if isinstance(result, Claim):
            raise web.HTTPFound(target)
        if isinstance(result, Limited):
            return limit_response(request, identity, result)
        if isinstance(result, Blocked):
            return blocked_page(request)
        status = await request.app[WAITING_ROOM].status(result)
    except StoreUnavailable:
        redis_error()
        return problem(request, 503, "Temporarily unavailable",
                       "The broker cannot reach its database. Retrying shortly.", retry_after=5)  # fmt: skip
    profiles = request.app[FLEET].spec.profiles
    context = {
        **status,
        "next": target,
        "events": f"{EVENTS_PATH}?{urlencode({'next': target})}",
        "identity": identity,
        "several": len(profiles) > 1,
        "profile": request.app[FLEET].spec.profile(result.profile).display_name
        if result.profile
        else "",
    }
    response = aiohttp_jinja2.render_template("waiting.html", request, context, status=503)
    response.headers["Retry-After"] = "5"
    return response


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _next_state(
    room: WaitingRoom, router: Router, store: FleetStore, user: str, waiting: Waiting | None,
    must_claim: bool, groups: tuple[str, ...] = (),
) -> Claim | Waiting:  # fmt: skip
    """The user's state now, calling the claim script only when it could succeed.

    Every waiting stream wakes on every change of its profile; most of them
    only refresh their place (one pipelined read). The claim script runs when
    a Ready pod could be theirs (position <= Ready pods, from the outlook all
    streams of the profile share), when they are not in line any more, or
    every CLAIM_EVERY seconds whatever happens.
    """
    if isinstance(waiting, Queued) and not must_claim:  # in line: refresh the place only
        seen = await store.see_waiting(user, waiting.profile)
        if seen is not None:
            waiting = Queued(waiting.profile, *seen)
            if waiting.position > (await room.outlook(waiting.profile)).ready:
                return waiting
    # unless_ended: a waiting tab left open when the session ended elsewhere claims nothing.
    return await router.route(user, unless_ended=True, groups=groups)


async def events(request: web.Request) -> web.StreamResponse:
    """GET /_broker/events: live position and estimate; `ready` when the pod is the user's."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    app = request.app
    target = safe_next(request.query.get("next"))
    choose = await needs_choice(request, identity, target)  # never queue for a default
    if choose is not None:
        return choose
    try:
        blocked = await blocked_answer(request, identity.user)
    except StoreUnavailable:
        redis_error()
        blocked = None  # the stream says Redis is out of reach
    if blocked is not None:
        return blocked
    return await capped(
        request,
        app[EVENT_STREAMS],
        identity.user,
        STREAMS_PER_USER,
        f"You have {STREAMS_PER_USER} waiting pages open already. Close some and reload.",
        10,
        lambda: _stream(request, identity, target),
    )


async def _stream(request: web.Request, identity: Identity, target: str) -> web.StreamResponse:
    app = request.app
    room, router, store = app[WAITING_ROOM], app[ROUTER], app[STORE]
    response = event_stream()
    await response.prepare(request)
    waiting: Waiting | None = None
    went_back = False  # said until the place moves forward again
    last_claim = 0.0
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                now = time.monotonic()
                must_claim = now - last_claim >= CLAIM_EVERY
                if must_claim:
                    last_claim = now
                state = await _next_state(
                    room, router, store, identity.user, waiting, must_claim, identity.groups
                )
                if isinstance(state, Claim):
                    event = _sse("ready", {"next": target})
                elif isinstance(state, SessionEnded | Limited | Blocked):  # the page reloads
                    # into the ended page, the group's limit or the blocked page (no place kept)
                    await response.write(_sse("ended", {"next": target}))
                    return response
                else:
                    went_back = _went_back(waiting, state, went_back)
                    waiting = state
                    status = await room.status(waiting)
                    if went_back and "message" in status:
                        status["message"] += WENT_BACK
                    event = _sse("status", status)
            except StoreUnavailable:  # Redis calls only: a closed tab (a failed write) is none
                redis_error()
                state = None
                event = _sse("status", {"phase": "unavailable", "eta": None,
                    "message": "The broker cannot reach its database. Retrying."})  # fmt: skip
            await response.write(event)
            if isinstance(state, Claim):
                return response
            await room.changed(waiting.profile if waiting else "", TICK)
    except ConnectionResetError:  # the tab closed: its place lasts SDB_QUEUE_GRACE more
        return response


def _went_back(before: Waiting | None, now: Waiting, said: bool) -> bool:
    """Whether the stream says the place went back: it grew since the last status, or it
    did earlier and has not moved forward since (the page never says it moved forward)."""
    if not (isinstance(before, Queued) and isinstance(now, Queued) and before.position > 0):
        return False
    if now.position > before.position:
        return True
    return said and now.position == before.position


def add_routes(app: web.Application) -> None:
    app[EVENT_STREAMS] = Counter()
    app.router.add_get(WAIT_PATH, wait_page)
    app.router.add_get(EVENTS_PATH, events)
