"""`iap` login: Google Identity-Aware Proxy's signed header, verified on every request.

The published GKE reference believed the plain `x-goog-authenticated-user-email`
header, so anything that reached nginx without passing IAP (a WebUI extension
inside the cluster, say) could be anyone. Here only `x-goog-iap-jwt-assertion`
counts: ES256, a kid from Google's key set, iss, aud = SDB_IAP_AUDIENCE, exp and
iat, on every path and every WebSocket upgrade except /_broker/healthz (the
load balancer's health check carries no token). The plain headers, when sent,
must agree with the token or the request is refused. Cookies are never read:
a token always wins over whatever session a browser carries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from ..appkeys import HTTP
from ..identity import Identity
from ..pages import problem
from ..security.signing import Signer
from ..settings import Settings
from .base import Authenticator
from .jwks import JWKSCache, TokenRejected, essential, verify

log = logging.getLogger(__name__)

ISSUER = "https://cloud.google.com/iap"
ALGORITHMS = ("ES256",)
ASSERTION = "x-goog-iap-jwt-assertion"
PLAIN_EMAIL = "x-goog-authenticated-user-email"
PLAIN_ID = "x-goog-authenticated-user-id"
#: `accounts.google.com:` (or an Identity Platform namespace) before the value.
NAMESPACE = re.compile(r"^[A-Za-z0-9._/-]+:")
#: The only path that answers without a token.
OPEN_PATHS = frozenset({"/_broker/healthz"})
METRICS_PATH = "/_broker/metrics"  # open only to SDB_METRICS_CIDRS
_VERIFIED = "sdb.iap_identity"


class IapAuthenticator(Authenticator):
    interactive = False
    default_logout_url = "/_gcp_iap/clear_login_cookie"

    def __init__(self, settings: Settings, signer: Signer) -> None:
        super().__init__(settings, signer)
        self.keys = JWKSCache(settings.iap_jwks_url, ttl=settings.jwks_cache_ttl)
        self._http: aiohttp.ClientSession | None = None

    def kept_headers(self, request: web.Request) -> Iterable[str]:
        # Kept only to be checked here; upstream_headers never forwards them to a pod.
        return (ASSERTION, PLAIN_EMAIL, PLAIN_ID)

    async def startup(self, app: web.Application) -> None:
        self._http = app[HTTP]
        await self.keys.refresh(self._http)  # warm the cache; a failure is retried on use

    def add_routes(self, app: web.Application) -> None:
        """No pages of its own: a gate in front of every handler instead."""

        @web.middleware
        async def iap_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path in OPEN_PATHS:
                return await handler(request)
            if request.path == METRICS_PATH and self.settings.may_scrape_metrics(request.remote):
                return await handler(request)  # Prometheus carries no IAP token
            identity = await self._verify(request)
            if identity is None:
                return problem(
                    request,
                    401,
                    "Not logged in",
                    "This address only answers requests that come through Google's "
                    "Identity-Aware Proxy.",
                )
            request[_VERIFIED] = identity
            return await handler(request)

        app.middlewares.append(iap_gate)

    async def identify(self, request: web.Request) -> Identity | None:
        return request.get(_VERIFIED) or await self._verify(request)

    async def _verify(self, request: web.Request) -> Identity | None:
        tokens = request.headers.getall(ASSERTION, [])
        if len(tokens) != 1 or self._http is None:
            return None
        audience = self.settings.iap_audience
        try:
            claims = await verify(
                tokens[0],
                self.keys,
                self._http,
                algorithms=ALGORITHMS,
                claims={
                    "iss": essential(ISSUER),
                    "aud": essential(audience),
                    "exp": essential(),
                    "iat": essential(),
                    "sub": essential(),
                    "email": essential(),
                },
            )
        except TokenRejected as exc:
            log.info("IAP assertion refused (peer %s): %s", request.remote, exc)
            return None
        email, sub = claims["email"], claims["sub"]
        if claims["aud"] != audience or not isinstance(email, str) or not isinstance(sub, str):
            log.info("IAP assertion refused (peer %s): aud or claim types", request.remote)
            return None
        if not _agrees(request, PLAIN_EMAIL, email) or not _agrees(request, PLAIN_ID, sub):
            log.warning(
                "IAP plain headers disagree with the signed assertion for %s (peer %s)",
                email,
                request.remote,
            )
            return None
        email = email.strip().lower()
        if not email or len(email) > 254 or any(ord(c) <= 0x20 for c in email):
            return None
        return Identity(user=email, email=email, sub=sub)


def _agrees(request: web.Request, header: str, value: str) -> bool:
    """An absent plain header is fine; a present one must name the token's own subject."""
    sent = request.headers.getall(header, [])
    if not sent:
        return True
    if len(sent) != 1:
        return False
    return NAMESPACE.sub("", sent[0].strip(), count=1).lower() == value.lower()
