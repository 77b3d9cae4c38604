"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from ..identity import Identity, is_identity_header, normalised
from ..logs import REQUEST_ID
from ..security.cookies import is_broker_cookie

#: RFC 9110 7.6.1 hop-by-hop headers, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _hop_by_hop(headers: MultiMapping[str]) -> frozenset[str]:
    """The fixed set plus every header the Connection header names."""
    values = headers.getall("Connection", ())
    return _with_named(tuple(values)) if values else HOP_BY_HOP


@functools.lru_cache(maxsize=256)
def _with_named(connection: tuple[str, ...]) -> frozenset[str]:
    """Memoised: a client sends the same Connection header ("keep-alive") each time."""
    return HOP_BY_HOP | {t.strip().lower() for value in connection for t in value.split(",")}


def strip_broker_cookies(cookie_header: str) -> str:
    """The Cookie header without any of our cookies, `__Host-` named or not, in any
    case (the pod never sees a session)."""
    parts = [p.strip() for p in cookie_header.split(";")]
    kept = [p for p in parts if p and not is_broker_cookie(p.split("=", 1)[0])]
    return "; ".join(kept)


# Set by the broker alone: what the client sent of them never reaches the pod.
_REPLACED = frozenset({"forwarded", "x-request-id"})


def upstream_headers(
    request: web.Request,
    identity: Identity,
    *,
    trusted_peer: bool,
    websocket: bool = False,
    identity_headers: Iterable[str] = (),
) -> CIMultiDict[str]:
    """Identity headers never cross, not even those a mode kept to verify (an IAP
    assertion, a trusted proxy's user header): the pod learns who it serves only
    from the X-Forwarded-User/Email set here."""
    drop = _hop_by_hop(request.headers)
    extra = normalised(tuple(identity_headers))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in drop or lname.startswith("x-forwarded-") or lname in _REPLACED:
            continue
        if is_identity_header(lname, extra):
            continue
        if lname == "cookie":
            value = strip_broker_cookies(value)
            if not value:
                continue
        out.add(name, value)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For", "") if trusted_peer else ""
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = "https" if request.get("sdb.https", request.secure) else "http"
    out["X-Forwarded-Host"] = request.host
    out["X-Forwarded-User"] = identity.user
    if request.get(REQUEST_ID):  # the broker's id (middleware.request_id), never the client's
        out["X-Request-Id"] = request[REQUEST_ID]
    if identity.email:
        out["X-Forwarded-Email"] = identity.email
    if websocket:  # the browser's Sec-WebSocket-* pass as sent: it and the pod shake hands
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
    return out


def downstream_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The pod's answer headers for the browser: no hop-by-hop header, and no cookie
    of ours. A WebUI shares our origin, so its Set-Cookie could otherwise plant or
    overwrite a broker session, CSRF or login cookie in its user's browser."""
    drop = _hop_by_hop(headers)
    return CIMultiDict(
        (k, v)
        for k, v in headers.items()
        if k.lower() not in drop and not (k.lower() == "set-cookie" and sets_broker_cookie(v))
    )


def sets_broker_cookie(set_cookie: str) -> bool:
    """Whether a Set-Cookie value names one of our cookies (`sdb_session`,
    `__Host-sdb_session`, `SDB_Session`...)."""
    return is_broker_cookie(set_cookie.split("=", 1)[0])
