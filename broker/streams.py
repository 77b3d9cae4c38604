"""Server-sent event streams a page holds open (the waiting page's, the presence
channel's): the response they start with, and a cap on how many one person holds per
process, so a script cannot pin a broker's sockets with thousands."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from .pages import problem


def event_stream() -> web.StreamResponse:
    """An EventSource's response: never cached, never buffered by a proxy in front."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }  # fmt: skip
    )


async def capped(
    request: web.Request,
    streams: Counter[str],
    user: str,
    limit: int,
    refusal: str,
    retry_after: int,
    hold: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """`hold()` while the user holds fewer than `limit` streams here; a 429 page saying
    `refusal` otherwise. The count is the process's own, given back however hold ends."""
    if streams[user] >= limit:
        return problem(request, 429, "Too many open pages", refusal, retry_after=retry_after)
    streams[user] += 1
    try:
        return await hold()
    finally:
        streams[user] -= 1
        if streams[user] <= 0:
            del streams[user]
