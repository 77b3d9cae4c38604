"""The broker's cookies: names, scope and flags in one place.

All are named `sdb_...`, so the proxy can strip every one of them before a
request reaches a WebUI. HttpOnly, SameSite=Lax, path /, no Domain.

Where the browser talks https to us (SDB_PUBLIC_URL is https://, or without
it this request came over TLS or from a trusted proxy saying so), every
cookie is Secure and carries the `__Host-` prefix (RFC 6265bis 4.1.3.2):
the browser then keeps it only if set by a secure origin with Path=/ and no
Domain, so neither a sibling subdomain (cookie tossing) nor a plain-http
answer can plant or overwrite it. On plain http (the loopback dev broker)
the names stay plain and not Secure: whether a browser keeps a Secure cookie
from http://localhost is its own choice (RFC 6265bis 5.7: "secure" as defined
by the user agent); Chromium 156 does, tests/browser/test_host_cookies.py.

Only the current scheme's names are read. After a move to https a browser's
old plain `sdb_session` is ignored (anyone on a sibling subdomain could have
set it), so its owner logs in again, and the next cookie set clears it.
"""

from __future__ import annotations

from aiohttp import web

COOKIE_PREFIX = "sdb_"
HOST_PREFIX = "__Host-"
SESSION_COOKIE = "sdb_session"
CSRF_COOKIE = "sdb_csrf"
LOGIN_COOKIE = "sdb_login"  # short-lived: state/nonce/PKCE of a login in progress


def is_https(request: web.Request) -> bool:
    """This request reached us over https (directly, or as a trusted proxy says)."""
    return bool(request.get("sdb.https", request.secure))


def secure_cookies(request: web.Request) -> bool:
    """Whether our cookies are `__Host-` and Secure: the public origin's scheme when
    SDB_PUBLIC_URL is set (the browser's view, whatever hop reached us), else this
    request's."""
    from ..appkeys import SETTINGS  # here: appkeys imports auth, which imports this module

    settings = request.app.get(SETTINGS)
    if settings is not None and settings.public_url:
        return settings.public_url.startswith("https://")
    return is_https(request)


def cookie_name(request: web.Request, name: str) -> str:
    """The name `name` (one of the constants above) goes by on this request."""
    return HOST_PREFIX + name if secure_cookies(request) else name


def get_cookie(request: web.Request, name: str) -> str | None:
    return request.cookies.get(cookie_name(request, name))


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: float | None,
) -> None:
    secure = secure_cookies(request)
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=int(max_age) if max_age is not None else None,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    _drop_plain(request, response, name, secure)


def clear_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    secure = secure_cookies(request)
    response.del_cookie(
        cookie_name(request, name), path="/", secure=secure, httponly=True, samesite="Lax"
    )
    _drop_plain(request, response, name, secure)


def _drop_plain(
    request: web.Request, response: web.StreamResponse, name: str, secure: bool
) -> None:
    """On https, the plain-named cookie of before the `__Host-` names goes too."""
    if secure and name in request.cookies:
        response.del_cookie(name, path="/", secure=True, httponly=True, samesite="Lax")


def is_broker_cookie(name: str) -> bool:
    """Whether a cookie name is one of ours, in any case and with any prefix
    (`__Host-`, `__Secure-`): browsers compare names exactly, but a look-alike is no
    WebUI's business either."""
    lowered = name.strip().lower()
    for prefix in ("__host-", "__secure-"):
        lowered = lowered.removeprefix(prefix)
    return lowered.startswith(COOKIE_PREFIX)
