"""CSRF tokens for every POST form: a signed token bound to a per-browser random cookie
and to who the form was made for.

Double-submit with a signature: a forged form needs both the browser's
`sdb_csrf` cookie value (`__Host-sdb_csrf` on https) and our key, so neither
a cross-site page nor a WebUI on a sibling path can produce one. The token also names the user the
page was rendered for ("" before login), so a token fetched anonymously (the
login page gives one to anybody) or as someone else opens no admin's form.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from .cookies import CSRF_COOKIE, get_cookie, set_cookie
from .signing import Signer

CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600.0
_NONCE = "sdb.csrf_nonce"


def csrf_token(request: web.Request, signer: Signer, *, user: str) -> str:
    """The token to put in a form made for `user` ("" when nobody is logged in);
    remembers a nonce to set as a cookie on the response."""
    nonce = get_cookie(request, CSRF_COOKIE) or request.get(_NONCE)
    if not nonce or len(nonce) > 64:
        nonce = secrets.token_urlsafe(24)
        request[_NONCE] = nonce
    return signer.sign("csrf", {"n": nonce, "u": user})


def attach_csrf_cookie(request: web.Request, response: web.StreamResponse) -> None:
    nonce = request.get(_NONCE)
    if nonce:
        set_cookie(request, response, CSRF_COOKIE, nonce, max_age=CSRF_MAX_AGE)


def csrf_ok(request: web.Request, signer: Signer, token: str | None, *, user: str) -> bool:
    """The token came with this browser's cookie and was made for `user`, who sends it."""
    nonce = get_cookie(request, CSRF_COOKIE)
    payload = signer.verify("csrf", token, max_age=CSRF_MAX_AGE)
    return bool(
        nonce
        and payload
        and hmac.compare_digest(str(payload.get("n")), nonce)
        and hmac.compare_digest(str(payload.get("u", "")), user)
    )
