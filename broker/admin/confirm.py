"""The step before a Reclaim or a Delete: a page that says what will end, asks for an
optional reason and carries the CSRF-checked form that does it.

A plain page rather than a script's `confirm()`: it works with scripts off, and
the reason it asks for goes into the audit entry's `detail` (ops.reclaim).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..forms import form_page
from ..identity import Identity
from . import ops
from .figures import ago, place
from .models import Done

TEMPLATE = "admin/confirm.html"
ACTIONS = {"user": "reclaim", "pod": "delete-pod"}  # what a confirmed form posts to, by field
#: A confirmation page for (request, admin, the user or pod), or why there is none.
ConfirmPage = Callable[[web.Request, Identity, str], Awaitable[web.Response | Done]]


async def reclaim_page(request: web.Request, who: Identity, user: str) -> web.Response | Done:
    """The confirmation of reclaiming USER's session, or why there is nothing to reclaim."""
    found = [s for s in await ops.sessions(request.app, busy=False) if s.user == user]
    if not found:
        # Not the name from the link: a link must not put words on an admin's screen.
        return Done(ok=False, detail="no such session now (it may have ended meanwhile)")
    s = found[0]
    facts = [
        ("user", s.user),
        ("pod", s.pod),
        ("profile", s.profile),
        ("GPU / node", place(s.node, s.gpu_slot)),
        ("session age", ago(s.age_seconds)),
        ("idle for", ago(s.idle_seconds)),
    ]
    effect = (
        "Their WebUI is stopped and its pod deleted now, generating or not; "
        "their images stay, and their next visit starts a new WebUI."
    )
    return _page(request, who, f"Reclaim the session of {user}?", effect, facts,
                 ("user", user), "Reclaim")  # fmt: skip


async def delete_page(request: web.Request, who: Identity, pod_id: str) -> web.Response | Done:
    """The confirmation of deleting POD_ID, or why there is nothing to delete."""
    found = [p for p in await ops.pods(request.app) if p.id == pod_id and p.state != "deleting"]
    if not found:
        return Done(ok=False, detail="no such pod now (or it is already being deleted)")
    p = found[0]
    effect = "The pod is deleted now; the controller starts another if the sizes ask for one."
    if p.user:
        effect = f"The session of {p.user} on it ends now, generating or not. " + effect
    facts = [
        ("pod", p.id),
        ("profile", p.profile),
        ("state", p.state),
        ("user", p.user or "nobody"),
        ("GPU / node", place(p.node, p.gpu_slot)),
    ]
    return _page(request, who, f"Delete pod {p.id}?", effect, facts, ("pod", p.id), "Delete")


def _page(
    request: web.Request, who: Identity, title: str, effect: str,
    facts: list[tuple[str, str]], field: tuple[str, str], button: str,
) -> web.Response:  # fmt: skip
    """The confirmation page: its form posts FIELD and the reason to the action (the
    console's reclaim or delete-pod, by the field's name)."""
    action = ACTIONS[field[0]]
    return form_page(
        request,
        TEMPLATE,
        {
            "who": who,
            "title": title,
            "effect": effect,
            "facts": facts,
            "action": f"/_broker/admin/{action}",
            "field": field,
            "button": button,
            "button_class": action,
            "reason_max": ops.REASON_MAX,
        },
        user=who.user,
    )
