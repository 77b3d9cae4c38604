"""The event listener: every message on `keys.EVENTS`, parsed (fleet/events.py), to every handler.

A listener (on a client from `connect_redis`) survives Redis restarts; after each (re)subscribe it hands its
handlers a RECONNECT event, since messages may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from . import keys
from .aiotasks import raise_if_cancelled
from .errors import StoreUnavailable
from .events import Event, Handler, Kind, parse

log = logging.getLogger(__name__)


def dispatch(handlers: Iterable[Handler], event: Event) -> None:
    """Hand `event` to every handler; one failing never stops the others."""
    for handler in handlers:
        try:
            handler(event)
        except Exception:
            log.exception("event handler failed on %s", event)


async def listen(redis: Redis, handlers: list[Handler]) -> None:
    """Dispatch every event to every handler until cancelled; after each (re)subscribe,
    a RECONNECT event (messages may have been missed meanwhile)."""
    backoff = 0.2
    while True:
        raise_if_cancelled()
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.EVENTS)
            dispatch(handlers, Event(Kind.RECONNECT))
            backoff = 0.2
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                event = parse(str(message["data"]))
                if event is None:
                    log.debug("ignored event %r", message["data"])
                    continue
                dispatch(handlers, event)
        except StoreUnavailable as exc:  # connect_redis translates (fleet/redis_boundary.py)
            log.warning("event listener lost Redis (%s); reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            with contextlib.suppress(StoreUnavailable):
                await pubsub.aclose()
