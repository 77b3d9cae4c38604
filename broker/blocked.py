"""The answer to a person an admin blocked (broker/admin/ops.py block): asked only where
a new session could start (a route-cache miss, the waiting page, the API's start), so a
request to a WebUI already routed costs nothing more. Blocking ends the session, which
clears every broker's cached route (the `release` event)."""

from __future__ import annotations

from aiohttp import web

from .appkeys import STORE
from .ended import session_ended
from .identity import Identity
from .pages import problem

BLOCKED_TITLE = "Access blocked"
BLOCKED_DETAIL = (
    "An administrator blocked your access to WebUIs, so none is started for you. "
    "Your outputs are kept. Ask an administrator if you think this is a mistake."
)


def blocked_page(request: web.Request) -> web.Response:
    """The 403 page (or JSON for scripts) of a blocked person; also what a claim refused in
    Redis because of a block (fleet's Blocked: a page that waited since before it) gets."""
    return problem(request, 403, BLOCKED_TITLE, BLOCKED_DETAIL)


async def blocked_answer(request: web.Request, user: str) -> web.StreamResponse | None:
    """A 403 page (or JSON for scripts) when USER is blocked; None otherwise."""
    if not await request.app[STORE].is_blocked(user):
        return None
    return blocked_page(request)


async def held_back(request: web.Request, identity: Identity) -> web.StreamResponse | None:
    """Why no new session starts for this person now, if there is a reason: blocked (403),
    or an unread "session ended" notice (its page and Start button, or a 409)."""
    blocked = await blocked_answer(request, identity.user)
    if blocked is not None:
        return blocked
    return await session_ended(request, identity.user, identity.groups)
