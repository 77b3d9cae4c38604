"""Tab presence: whether a person still has a page of theirs open, from connections
a tab holds for its whole life.

A tab's life shows in what the broker already carries: a WebSocket to the pod
(ComfyUI's page keeps `/ws` open and reopens it when it drops), Gradio 4's
heartbeat stream (Forge's page holds `GET /heartbeat/{session_hash}` open as
an EventSource), and the broker's own `/_broker/presence` stream, which the
home page `/_broker/` holds, as does the broker's bar in the WebUI's own page
of a profile with `overlay: true` (the pinned A1111, Gradio 3, keeps nothing
open while idle). Each broker
process counts the connections it holds per user in memory and writes them
every beat (fleet/store/presence.py): never a Redis write per connection.
Presence is not activity: an open, unused tab still ends after idle_timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import web

from fleet import FleetStore, StoreUnavailable

from .admission import authenticate
from .identity import Identity
from .streams import capped, event_stream

log = logging.getLogger(__name__)

PRESENCE_PATH = "/_broker/presence"
#: Presence streams one person may hold open on one broker process: a person has a few
#: tabs, and each stream holds a connection and a task of the broker.
STREAMS_PER_USER = 8
#: How often the presence stream looks whether its tab is still there, and how often
#: it sends a comment so proxies on the way keep the stream open.
LOOK_EVERY = 0.5
KEEPALIVE = 15.0
#: Gradio 4's page holds this open as an EventSource for its whole life (gradio 4.x,
#: gradio/routes.py, App.create_app: `@app.get("/heartbeat/{session_hash}")`, "Clients
#: make a persistent connection to this endpoint to keep the session alive", a
#: text/event-stream answering "data: ALIVE" every 15 s).
HEARTBEAT_PREFIX = "/heartbeat/"


def holds_tab(method: str, path: str, *, websocket: bool) -> bool:
    """Is this proxied request a connection a tab holds open (not a job's own stream)?"""
    return websocket or (method == "GET" and path.startswith(HEARTBEAT_PREFIX))


class PresenceTracker:
    """This process's open tab connections per user, written to Redis every beat.

    A beat's counts expire after `ttl` seconds unless the next beat renews them,
    so a killed process's tabs vanish from every other broker's view.
    """

    def __init__(
        self, store: FleetStore, *, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ttl = 3 * interval + 1.0  # three missed beats, and a second for a slow loop
        self.clock = clock
        self.process = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._open: dict[str, int] = {}
        self._closed: dict[str, float] = {}

    def opened(self, user: str) -> None:
        self._open[user] = self._open.get(user, 0) + 1

    def closed(self, user: str) -> None:
        left = self._open.get(user, 0) - 1
        if left > 0:
            self._open[user] = left
            return
        self._open.pop(user, None)
        self._closed[user] = self.clock()

    @contextlib.contextmanager
    def tab(self, user: str) -> Iterator[None]:
        """Counts one open tab connection of `user` while the block runs."""
        self.opened(user)
        try:
            yield
        finally:
            self.closed(user)

    def open_tabs(self, user: str) -> int:
        return self._open.get(user, 0)

    async def beat(self) -> None:
        """Write this process's counts and the tabs closed since the last beat."""
        await self._write(self.clock() + self.ttl)

    async def leave(self) -> None:
        """The process stops: every tab it still holds is closed now, its counts go."""
        now = self.clock()
        for user in self._open:
            self._closed[user] = now
        self._open.clear()
        await self._write(None)

    async def _write(self, expires: float | None) -> None:
        closed, self._closed = self._closed, {}
        try:
            await self.store.presence_beat(
                self.process, dict(self._open), closed, expires=expires, keep=int(self.ttl * 4)
            )
        except StoreUnavailable as exc:
            for user, at in closed.items():  # kept for the next beat
                self._closed[user] = max(at, self._closed.get(user, 0.0))
            log.warning("presence beat failed (%s); will retry", exc)


PRESENCE = web.AppKey("presence", PresenceTracker)
PRESENCE_STREAMS = web.AppKey("presence_streams", Counter[str])


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def presence_stream(request: web.Request) -> web.StreamResponse:
    """An EventSource a page of the person holds open: while it is, they have a tab.

    Same identity and allow lists as every request; it claims nothing and is not
    activity (an open tab is no person at work)."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    return await capped(
        request,
        request.app[PRESENCE_STREAMS],
        identity.user,
        STREAMS_PER_USER,
        f"You have {STREAMS_PER_USER} pages of this site open already. Close some.",
        30,
        lambda: _hold(request, identity),
    )


async def _hold(request: web.Request, identity: Identity) -> web.StreamResponse:
    response = event_stream()
    await response.prepare(request)
    with request.app[PRESENCE].tab(identity.user):
        try:
            await response.write(b"retry: 5000\n\n: here\n\n")
            quiet = 0.0
            while not _gone(request):
                await asyncio.sleep(LOOK_EVERY)
                quiet += LOOK_EVERY
                if quiet >= KEEPALIVE:
                    quiet = 0.0
                    await response.write(b": here\n\n")
        except ConnectionResetError:  # the tab closed between two looks
            pass
    return response


def add_routes(app: web.Application) -> None:
    app[PRESENCE_STREAMS] = Counter()
    app.router.add_get(PRESENCE_PATH, presence_stream)
