"""Request middleware that runs before anything else reads a request."""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from . import logs
from .appkeys import AUTH, SETTINGS
from .identity import without_identity_headers

REQUEST_ID_HEADER = "X-Request-Id"
#: The admin API's token beside IAP's own `Authorization` (docs/operations.md, "Scripts behind IAP").
API_TOKEN_HEADER = "X-Sdbroker-Token"
API_PREFIX = "/_broker/api/"
API_TOKEN = "sdb.api_token"
# What a trusted proxy's id may look like (a UUID, a Cloud trace id, nginx's $request_id):
# nothing that could forge a second log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id: a trusted proxy's X-Request-Id, else a new one. It is on
    every log line of the request, sent to the pod, and returned to the browser."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    trusted = request.app[SETTINGS].is_trusted_proxy(request.remote)
    rid = sent if trusted and _REQUEST_ID.fullmatch(sent) else secrets.token_hex(16)
    request[logs.REQUEST_ID] = rid
    logs.start_request(rid)
    return await handler(request)


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names its request, streamed ones and the pod's
    included (a pod's own X-Request-Id is replaced)."""
    rid = request.get(logs.REQUEST_ID)
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid


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
    api_token = (
        request.headers.get(API_TOKEN_HEADER) if request.path.startswith(API_PREFIX) else None
    )
    if clean is not None:
        request = request.clone(headers=clean)
    if api_token:  # read by the API alone; dropped from the headers like every X-Sdbroker-*
        request[API_TOKEN] = api_token
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
