"""Who may use the console, the metrics page and the admin actions: one check, one place.

Admins are named by SDB_ADMIN_USERS / SDB_ADMIN_GROUPS; the access layer
(`broker.security.access`, applied by `admission.authenticate`) sets `is_admin`. Every
admin page and action goes through `require_admin`, so a new page cannot
forget the check by using a different one.
"""

from __future__ import annotations

from aiohttp import web

from ..admission import authenticate
from ..identity import Identity
from ..pages import problem


async def require_admin(request: web.Request) -> Identity | web.StreamResponse:
    """The admin's identity, or the response to send: login/401, refused, or 403."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    if not identity.is_admin:
        return problem(
            request,
            403,
            "Admins only",
            f"You are logged in as {identity.user}, who is not an admin of this site.",
        )
    return identity
