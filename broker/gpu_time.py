"""GPU-minutes from the fleet's usage (pod-seconds by profile): shared by GET /usage,
the users list's min_gpu_minutes filter and the console's usage tables, so all give
the same sums."""

from __future__ import annotations

from aiohttp import web

from fleet import Usage, UsageBy, read_usage

from .appkeys import FLEET, STORE
from .logs import gpus_per_pod


def gpu_minutes(u: Usage, gpus: dict[str, int]) -> dict[str, float]:
    """GPU-minutes by profile: pod-seconds times the profile's GPUs per pod (one for a
    profile the fleet file no longer has)."""
    return {name: s * gpus.get(name, 1) / 60 for name, s in u.seconds.items()}


async def usage_of(
    request: web.Request, since: float, until: float, by: UsageBy
) -> tuple[list[Usage], dict[str, int]]:
    """Usage in [since, until] (fleet.read_usage) and each profile's GPUs per pod."""
    spec = request.app[FLEET].spec
    gpus = {p.name: gpus_per_pod(p) for p in spec.profiles}
    return await read_usage(request.app[STORE], list(gpus), since, until, by), gpus


async def top_usage(
    request: web.Request, since: float, until: float, by: UsageBy, count: int
) -> list[tuple[str, float, int]]:
    """The `count` biggest users (or groups) by GPU-minutes: (key, minutes, sessions)."""
    found, gpus = await usage_of(request, since, until, by)
    rows = [(u.key, round(sum(gpu_minutes(u, gpus).values()), 1), u.sessions) for u in found]
    return sorted(rows, key=lambda r: (-r[1], r[0]))[:count]
