"""Who may in: the identity of a request, checked against the allow lists.

Every handler that serves a person (the gateway, the waiting room, the
chooser, the admin guard) calls `authenticate`, so the lists hold everywhere.
"""

from __future__ import annotations

import logging

import aiohttp_jinja2
from aiohttp import web

from . import logs
from .appkeys import ACCESS, AUTH, SIGNER
from .identity import Identity
from .pages import unauthenticated, wants_html
from .security.csrf import CSRF_FIELD, attach_csrf_cookie, csrf_token

log = logging.getLogger(__name__)


async def authenticate(request: web.Request) -> Identity | web.StreamResponse:
    """Who is asking, if they may in (is_admin set); else the 401/redirect or 403 to send.

    Every handler that serves a person calls this, so the allow lists hold on
    every page and every WebSocket, not only on the proxied paths.
    """
    identity = await request.app[AUTH].identify(request)
    if identity is None:
        return unauthenticated(request)
    admitted = request.app[ACCESS].admit(identity)
    if admitted is None:
        return refused(request, identity)
    logs.bind(user=admitted.user, groups=list(admitted.groups) or None)
    return admitted


def refused(request: web.Request, identity: Identity) -> web.Response:
    """403 that says who they are logged in as and how to log out; nothing is proxied."""
    auth = request.app[AUTH]
    log.info("refused %s (%s): not on the allow lists", identity.user, identity.email or "-")
    detail = "Your account is not on this site's list of users. Ask its admin for access."
    if not wants_html(request):
        body = {"error": "Not allowed", "detail": detail, "user": identity.user}
        return web.json_response({**body, "logout": auth.logout_url}, status=403)
    own_logout = auth.logout_url == "/_broker/logout"
    signer = request.app[SIGNER]
    response = aiohttp_jinja2.render_template(
        "refused.html",
        request,
        {
            "identity": identity,
            "detail": detail,
            "logout_url": auth.logout_url,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(request, signer, user=identity.user) if own_logout else "",
        },
        status=403,
    )
    if own_logout:
        attach_csrf_cookie(request, response)
    return response
