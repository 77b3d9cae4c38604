"""The broker's cookies: names, scope and flags in one place.

All start with `sdb_`, so the proxy can strip every one of them before a
request reaches a WebUI. HttpOnly, SameSite=Lax, path /, and Secure whenever
the browser talks https to us (directly or through a trusted proxy).
"""

from __future__ import annotations

from aiohttp import web

COOKIE_PREFIX = "sdb_"
SESSION_COOKIE = "sdb_session"
CSRF_COOKIE = "sdb_csrf"
LOGIN_COOKIE = "sdb_login"  # short-lived: state/nonce/PKCE of a login in progress


def is_https(request: web.Request) -> bool:
    return bool(request.get("sdb.https", request.secure))


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: float | None,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(max_age) if max_age is not None else None,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )


def clear_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/", secure=is_https(request), httponly=True, samesite="Lax")
