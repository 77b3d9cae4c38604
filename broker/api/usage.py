"""GET /api/v1/usage: GPU-minutes per user or per group over a window.

The fleet sums each session's pod-seconds inside the window from the audit stream
and the sessions running now (fleet/usage.py, which says what it cannot see); here
they become GPU-minutes with each profile's GPUs per pod from the fleet file (a
profile the file no longer has counts one GPU per pod, as broker/logs.py does).
"""

from __future__ import annotations

import math
import time
from typing import cast

from aiohttp import web
from pydantic import BaseModel, Field

from fleet import UsageBy, parse_duration

from ..gpu_time import gpu_minutes, usage_of
from .users import BadInput

DEFAULT_WINDOW = "24h"


class UsageRow(BaseModel):
    """One user's or group's GPU time in the window."""

    key: str = Field(description='the user, or the group ("" = sessions whose groups are unknown)')
    gpu_minutes: float
    sessions: int = Field(description="sessions with time in the window, ended or running")
    running: int = Field(description="of which still running")
    by_profile: dict[str, float] = Field(description="GPU-minutes per profile")


class UsageReport(BaseModel):
    """GPU-minutes over [since, until], most used first."""

    since: float
    until: float
    by: str
    rows: list[UsageRow]


def _when(raw: str, name: str, now: float) -> float:
    """Unix seconds, or a duration back from now (`24h`, `7d`)."""
    try:
        value = float(raw)
    except ValueError:
        try:
            return now - parse_duration(raw)
        except ValueError:
            raise BadInput(
                f"{name} must be unix seconds or a duration back from now (24h, 7d), not {raw!r}"
            ) from None
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{name} must be unix seconds or a duration back from now, not {raw!r}")
    return value


async def usage(request: web.Request) -> UsageReport:
    by = request.query.get("by", "user")
    if by not in ("user", "group"):
        raise BadInput(f"by must be user or group, not {by!r}")
    now = time.time()
    since = _when(request.query.get("since", DEFAULT_WINDOW), "since", now)
    until = _when(request.query["until"], "until", now) if "until" in request.query else now
    if since > until:
        raise BadInput("since must not be after until")
    found, gpus = await usage_of(request, since, until, cast("UsageBy", by))
    rows = []
    for u in found:
        minutes = gpu_minutes(u, gpus)
        rows.append(
            UsageRow(
                key=u.key,
                gpu_minutes=round(sum(minutes.values()), 3),
                sessions=u.sessions,
                running=u.running,
                by_profile={name: round(m, 3) for name, m in minutes.items()},
            )
        )
    rows.sort(key=lambda r: (-r.gpu_minutes, r.key))
    return UsageReport(since=since, until=until, by=by, rows=rows)
