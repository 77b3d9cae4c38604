"""Request middleware that runs before anything else reads a request."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import AUTH, SETTINGS
from .identity import without_identity_headers


@web.middleware
async def drop_identity_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Drop every client-sent identity header, unless this mode trusts this peer for it."""
    settings = request.app[SETTINGS]
    trusted = settings.is_trusted_proxy(request.remote)
    if trusted and request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        request["sdb.https"] = True
    clean = without_identity_headers(
        request.headers,
        extra=(settings.auth_header, settings.auth_email_header, settings.auth_groups_header),
        keep=request.app[AUTH].kept_headers(request),
    )
    if clean is not None:
        request = request.clone(headers=clean)
    return await handler(request)


@web.middleware
async def broker_page_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages the broker itself serves are not framed, sniffed or cached."""
    response = await handler(request)
    if request.path.startswith("/_broker/"):
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    return response
