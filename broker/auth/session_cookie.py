"""Stateless signed session cookies (dev and header modes): user, email, groups."""

from __future__ import annotations

from aiohttp import web

from ..identity import Identity
from ..security.cookies import SESSION_COOKIE, clear_cookie, get_cookie, set_cookie
from ..security.signing import Signer


def read_session(request: web.Request, signer: Signer, max_age: float) -> Identity | None:
    payload = signer.verify("session", get_cookie(request, SESSION_COOKIE), max_age=max_age)
    if not payload or not isinstance(payload.get("u"), str) or not payload["u"]:
        return None
    groups = payload.get("g") or []
    return Identity(
        user=payload["u"],
        email=str(payload.get("e") or ""),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
    )


def write_session(
    request: web.Request,
    response: web.StreamResponse,
    signer: Signer,
    identity: Identity,
    max_age: float,
) -> None:
    token = signer.sign(
        "session", {"u": identity.user, "e": identity.email, "g": list(identity.groups)}
    )
    set_cookie(request, response, SESSION_COOKIE, token, max_age=max_age)


def end_session(request: web.Request, response: web.StreamResponse) -> None:
    clear_cookie(request, response, SESSION_COOKIE)
