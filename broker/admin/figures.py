"""The console's live figures: the text of every cell that changes, keyed by its cell.

The page renders each such cell from this very mapping and GET
/_broker/admin/figures returns it as JSON, so what the console's script puts
in place every few seconds is the page's own text, formatted once, here.
Keys go into `data-fig` attributes (autoescaped) and are looked up in a map by
the script, never spliced into a selector, so a user name cannot inject one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .models import PodView, ProfileView, SessionView, WaiterView

COUNTS = ("warming", "ready", "claimed", "deleting", "queue")
NOTHING = "—"


def ago(seconds: float | None) -> str:
    """12s, 4m, 3h 05m: short enough for a table cell."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s" if value < 60 else ago(value)


def clock_in(timezone: str, form: str = "%a %Y-%m-%d %H:%M:%S") -> Callable[[float | None], str]:
    """Times as the fleet file's schedules read them: in the spec's timezone."""
    zone = ZoneInfo(timezone)

    def clock(at: float | None) -> str:
        return datetime.fromtimestamp(at, zone).strftime(form) if at else "-"

    return clock


def place(node: str | None, gpu_slot: str | None) -> str:
    """The GPU/node cell: what the backend knows of where a pod runs, else a dash."""
    parts = [node or "", f"GPU {gpu_slot}" if gpu_slot else ""]
    return " · ".join(p for p in parts if p) or NOTHING


def busy(value: bool | None) -> str:
    return "?" if value is None else "generating" if value else "no"


def figures(
    profiles: list[ProfileView],
    sessions: list[SessionView],
    pods: list[PodView],
    waiting: list[WaiterView],
    *,
    now: float,
    timezone: str,
) -> dict[str, Any]:
    """{cells: {key: text}, rows: {sessions: [user], pods: [id]}, clock: HH:MM:SS}."""
    cells: dict[str, str] = {
        "count/sessions": str(len(sessions)),
        "count/waiting": str(len(waiting)),
        "count/pods": str(len(pods)),
    }
    for p in profiles:
        for name in COUNTS:
            cells[f"profile/{p.name}/{name}"] = str(getattr(p, name))
        cells[f"profile/{p.name}/sizes"] = f"{p.sizes.min} / {p.sizes.buffer} / {p.sizes.max}"
    for s in sessions:
        cells[f"session/{s.user}/age"] = ago(s.age_seconds)
        cells[f"session/{s.user}/idle"] = ago(s.idle_seconds)
        cells[f"session/{s.user}/busy"] = busy(s.busy)
        cells[f"session/{s.user}/place"] = place(s.node, s.gpu_slot)
    for pod in pods:
        cells[f"pod/{pod.id}/state"] = pod.state
        cells[f"pod/{pod.id}/user"] = pod.user
        cells[f"pod/{pod.id}/place"] = place(pod.node, pod.gpu_slot)
    return {
        "cells": cells,
        "rows": {"sessions": [s.user for s in sessions], "pods": [p.id for p in pods]},
        "clock": clock_in(timezone, "%H:%M:%S")(now),
    }
