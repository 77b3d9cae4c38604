"""Cross-site requests to a WebUI: refused before they reach it.

A WebUI shares the broker's origin and trusts the session cookie the browser
attaches, so any site the user visits could otherwise drive it: open its
WebSocket (browsers send cookies with a cross-site WebSocket handshake and
no CORS applies: cross-site WebSocket hijacking) or post forms to its API.
Browsers say where such a request comes from: `Origin` on every WebSocket
handshake and on POSTs, `Sec-Fetch-Site` on every request of a modern
browser. A request with neither comes from no browser (a script with the
user's cookie or token forges nothing), so it goes on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from .security.cookies import is_https

#: Methods that change something: a browser sends them cross-site without asking.
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalised_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port; None if not one."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None or str(port) == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def own_origin(request: web.Request, public_url: str | None) -> str | None:
    """The origin the browser reached us at: SDB_PUBLIC_URL's, else this request's."""
    if public_url:
        return normalised_origin(public_url)
    scheme = "https" if is_https(request) else "http"
    return normalised_origin(f"{scheme}://{request.host}")


def cross_site(
    request: web.Request, *, websocket: bool, public_url: str | None, allowed: frozenset[str]
) -> str | None:
    """Why this request to a WebUI must not go on (cross-site), or None."""
    if not websocket and request.method not in UNSAFE:
        return None
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    origins = request.headers.getall("Origin", [])
    if not origins:
        return None
    if len(origins) > 1:
        return "more than one Origin header"
    origin = normalised_origin(origins[0])  # "null" (sandboxed frames, privacy) is None
    if origin is not None and (origin == own_origin(request, public_url) or origin in allowed):
        return None
    return f"Origin {origins[0][:100]}"
