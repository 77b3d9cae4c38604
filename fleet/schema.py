"""The version of the Redis layout (every key in fleet/keys.py), checked before serving.

A broker must not run on a layout it does not know: it would read keys it
misunderstands and write ones the others misunderstand. The layout is one
number under keys.SCHEMA. The rule for a rollout in which brokers of layout N
and N+1 run side by side (docs/operations.md, "Redis layout"):

- a release of layout N+1 runs on a Redis of layout N, reading and writing
  N's keys as N does (OLDEST says how far back it goes); it never raises the
  stored number on its own, so the N brokers still running go on working;
- once every broker runs N+1, `sdbroker layout --finalize` stores N+1;
- a broker refuses a layout newer than its own (a rollback after finalizing,
  an unknown future layout) and one older than its OLDEST;
- an empty Redis (a new install, a flushed one) gets this broker's layout.
"""

from __future__ import annotations

from redis.asyncio import Redis

from . import keys

#: This code's layout. Layout 1 is every key of fleet/keys.py as of sdbroker 0.x;
#: a Redis written before the key existed is layout 1.
LAYOUT = 1
#: The oldest stored layout this code still runs on.
OLDEST = 1


class LayoutError(Exception):
    """This broker must not run on the Redis layout it found (one message, for the admin)."""


def _parse(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


async def ensure(redis: Redis, *, layout: int = LAYOUT, oldest: int = OLDEST) -> int:
    """The stored layout, written first when Redis has none; LayoutError when this broker
    (of `layout`, running on `oldest` and later) must not run on it."""
    await redis.set(keys.SCHEMA, str(layout), nx=True)
    raw = await redis.get(keys.SCHEMA)
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    stored = _parse(text)
    if stored is None:
        raise LayoutError(
            f"Redis holds an sdbroker layout this broker does not know ({keys.SCHEMA} = "
            f"{text[:40]!r}); it knows layouts {oldest} to {layout}. Refusing to start."
        )
    if stored > layout:
        raise LayoutError(
            f"Redis holds sdbroker layout {stored}, newer than this broker's ({layout}): "
            "a newer release wrote it (and was finalized). Run that release, or restore "
            "Redis from a backup of layout "
            f"{layout}. Refusing to start (docs/operations.md, Redis layout)."
        )
    if stored < oldest:
        raise LayoutError(
            f"Redis holds sdbroker layout {stored}, older than this broker runs on "
            f"({oldest} to {layout}): upgrade through a release that reads layout {stored} "
            "first, and finalize it. Refusing to start (docs/operations.md, Redis layout)."
        )
    return stored


async def finalize(redis: Redis, *, layout: int = LAYOUT, oldest: int = OLDEST) -> tuple[int, int]:
    """Store this broker's layout, once every broker runs it: (before, after)."""
    before = await ensure(redis, layout=layout, oldest=oldest)
    await redis.set(keys.SCHEMA, str(layout))
    return before, layout
