"""Events between replicas over Redis pub/sub: claim, release, queue, ready, rebuild, spec.

Messages are `KIND [PROFILE [SUBJECT]]`. A listener survives Redis restarts;
handlers are plain callables that must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from . import keys
from .aiotasks import raise_if_cancelled
from .store import REDIS_DOWN

log = logging.getLogger(__name__)
Handler = Callable[[str, list[str]], None]


async def listen(
    redis: Redis, handlers: list[Handler], *, on_reconnect: Callable[[], None] | None = None
) -> None:
    """Dispatch every event to every handler until cancelled."""
    backoff = 0.2
    while True:
        raise_if_cancelled()
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.EVENTS)
            if on_reconnect:
                on_reconnect()
            backoff = 0.2
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                kind, *rest = str(message["data"]).split(" ")
                for handler in handlers:
                    try:
                        handler(kind, rest)
                    except Exception:
                        log.exception("event handler failed on %r", message["data"])
        except REDIS_DOWN as exc:
            log.warning("event listener lost Redis (%s); reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            with contextlib.suppress(REDIS_DOWN):
                await pubsub.aclose()
