"""The answer when a limit of the person's groups applies (fleet.yaml's groups:, issue 19).

claim.lua refuses a new session instead of queueing it behind the limit (a group's
sessions can last for hours; docs/operations.md, Group limits): a person gets a page
that says who they are, which group, the limit and how much of it is in use; a script
gets 429 JSON with the same facts and Retry-After.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from fleet import Limited

from .identity import Identity
from .pages import wants_html

#: Seconds a client is told to wait before asking again: a session limit frees when one of
#: the group's sessions ends; a budget as the oldest GPU-hours leave the 24-hour window.
RETRY_AFTER = {"sessions": 60, "budget": 600}


def _words(limited: Limited) -> tuple[str, str]:
    """(title, detail) in the person's words."""
    if limited.kind == "budget":
        return (
            "Your group's GPU time for today is used up",
            f"The group {limited.group} may use {limited.limit:g} GPU-hours in any 24 hours; "
            f"its members have used {limited.held:.1f}. Running WebUIs go on; new ones start "
            "again as the oldest hours leave the 24-hour window.",
        )
    held, most = int(limited.held), int(limited.limit)
    return (
        "Your group's WebUIs are all in use",
        f"The group {limited.group} may hold {most} WebUI{'s' if most != 1 else ''} at once, "
        f"and {held} {'are' if held != 1 else 'is'} in use by its members now.",
    )


def limit_response(request: web.Request, identity: Identity, limited: Limited) -> web.Response:
    """The limit page for a person, 429 JSON for anything else; nothing was claimed."""
    title, detail = _words(limited)
    retry = str(RETRY_AFTER.get(limited.kind, 60))
    if wants_html(request):
        context = {"title": title, "detail": detail, "group": limited.group, "identity": identity}
        response = aiohttp_jinja2.render_template("limited.html", request, context, status=429)
        response.headers["Retry-After"] = retry
        return response
    body = {
        "error": title,
        "detail": detail,
        "user": identity.user,
        "group": limited.group,
        "limit": limited.kind,
        "allowed": limited.limit,
        "in_use": limited.held,
    }
    return web.json_response(body, status=429, headers={"Retry-After": retry})
