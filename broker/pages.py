"""Pages the broker serves itself: health, readiness, and what went wrong (waiting: waiting.py).

A person always sees a page that says what happened; a script gets JSON with
the same words and a status code to act on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from fleet import TaskHealth

from .appkeys import AUTH, FLEET, STORE, TASKS
from .security.redirects import safe_next

READY_REDIS_WAIT = 0.3  # seconds readyz waits for Redis's answer before saying it is away


def wants_html(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def problem(
    request: web.Request, status: int, title: str, detail: str, **extra: Any
) -> web.Response:
    """An error as a page for people, as JSON for everything else."""
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else {}
    if wants_html(request):
        response = aiohttp_jinja2.render_template(
            "problem.html", request, {"title": title, "detail": detail, **extra}, status=status
        )
        response.headers.update(headers)
        return response
    body = {"error": title, "detail": detail, **{k: v for k, v in extra.items() if k != "identity"}}
    return web.json_response(
        body, status=status, headers=headers, dumps=lambda o: json.dumps(o, default=str)
    )


def unauthenticated(request: web.Request) -> web.StreamResponse:
    if request.app[AUTH].interactive and wants_html(request):
        target = safe_next(request.path_qs)
        raise web.HTTPFound("/_broker/login?" + urlencode({"next": target}))
    return problem(request, 401, "Not logged in", "Log in to reach your WebUI.")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when the fleet spec is loaded and the platform shows its pods (a missing RBAC
    rule or CRD is named here, verb and resource, not only in a log).

    Never on Redis: every replica shares one Redis, so failing on it would take every
    broker out of the Service at once, cutting users off from the routes each one has
    cached (a Redis restart or failover would be a full outage). The body says whether
    Redis answered within READY_REDIS_WAIT, and how each background task fares, for
    people; the status depends on neither (a task failing on Redis is Redis down again).
    """
    fleet = request.app[FLEET]
    if problem := fleet.backend.problem():
        return web.Response(status=503, text=f"not ready: {problem}\n")
    try:
        async with asyncio.timeout(READY_REDIS_WAIT):  # well inside a kubelet probe's 1 s
            await request.app[STORE].ping()
        redis = "redis answers"
    except Exception:
        redis = "redis unreachable: cached routes only"
    tasks = request.app.get(TASKS)
    lines = [describe_task(n, h, time.time()) for n, h in tasks.health.items()] if tasks else []
    body = f"ready ({len(fleet.spec.profiles)} profiles; {redis})\n"
    return web.Response(text=body + "".join(f"task {line}\n" for line in lines))


def describe_task(name: str, health: TaskHealth, now: float) -> str:
    """One line of readyz: `NAME: running|idle; ok 3s ago; failed 1s ago (ConnectionError),
    2 in a row, again in 4s`. Only the error's type: readyz answers anonymous callers."""
    parts = [f"{name}: {'running' if health.running else 'idle'}"]
    if health.last_success is not None:
        parts.append(f"ok {max(0.0, now - health.last_success):.0f}s ago")
    if health.last_error_at is not None:
        failed = f"failed {max(0.0, now - health.last_error_at):.0f}s ago ({health.last_error})"
        if health.failures_in_row:
            failed += f", {health.failures_in_row} in a row, again in {health.retry_in:.0f}s"
        parts.append(failed)
    return "; ".join(parts)


__all__ = ["healthz", "problem", "readyz", "unauthenticated", "wants_html"]
