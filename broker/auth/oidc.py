"""`oidc` login: the broker is an OpenID Connect client (authorization code + PKCE S256).

The login is bound to the browser that started it twice over: a short-lived
signed `sdb_login` cookie carries the `state` and a hash of the `nonce`, and
Redis keeps the rest (PKCE verifier, nonce, next) under the hash of the state,
taken once. A callback URL pasted into another browser, replayed, or carrying
an ID token minted for another login, client or issuer is refused. The ID token
is checked with joserfc against the provider's keys (asymmetric algorithms
only); an unverified email is refused unless SDB_OIDC_REQUIRE_VERIFIED_EMAIL=false.
Every SDB_SESSION_REFRESH the provider is asked again (oidc_refresh.py).

The redirect URI is SDB_PUBLIC_URL + /_broker/callback; without it, the Host
of a request from a trusted proxy, or else the bind address (loopback only).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import aiohttp_jinja2
from aiohttp import web
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri

from fleet import StoreUnavailable

from ..appkeys import EVENT_HANDLERS, HTTP, REDIS
from ..identity import Identity
from ..pages import problem
from ..security.cookies import LOGIN_COOKIE, SESSION_COOKIE, clear_cookie, get_cookie, set_cookie
from ..security.redirects import safe_next
from ..security.signing import Signer
from ..settings import Settings
from .base import Authenticator
from .jwks import JWKSCache, TokenRejected, essential, verify
from .oidc_provider import (
    AiohttpOAuth2Client,
    Discovery,
    LoginFailed,
    Provider,
    ProviderUnavailable,
    public_base,
)
from .oidc_refresh import fetch_userinfo, refreshed, session_tokens
from .sessions import PendingLogins, SessionStore, digest, new_secret

log = logging.getLogger(__name__)

LOGIN_TTL = 600.0  # seconds from the redirect to the provider until its callback
CALLBACK = "/_broker/callback"
LOGGED_OUT = "/_broker/logged-out"
UNAVAILABLE = "The broker cannot reach its database. Retrying shortly."


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


class OidcAuthenticator(Authenticator):
    def __init__(self, settings: Settings, signer: Signer) -> None:
        super().__init__(settings, signer)
        assert settings.oidc_issuer and settings.oidc_client_id  # checked by Settings
        self.client_id = settings.oidc_client_id
        self.discovery = Discovery(settings.oidc_issuer, ttl=settings.jwks_cache_ttl)
        self.keys = JWKSCache(None, ttl=settings.jwks_cache_ttl)
        self._http: aiohttp.ClientSession | None = None
        self._sessions: SessionStore | None = None
        self._pending: PendingLogins | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "startup() has not run"
        return self._http

    @property
    def sessions(self) -> SessionStore:
        assert self._sessions is not None, "startup() has not run"
        return self._sessions

    async def startup(self, app: web.Application) -> None:
        self._http = app[HTTP]
        self._sessions = SessionStore(
            app[REDIS], ttl=self.settings.session_ttl, cache_ttl=self.settings.session_cache_ttl
        )
        self._pending = PendingLogins(app[REDIS], ttl=LOGIN_TTL)
        app[EVENT_HANDLERS].append(self._sessions.on_event)  # revocations from anywhere
        with contextlib.suppress(ProviderUnavailable):
            await self.provider()  # warm the caches; a failure is retried at the first login

    async def revoke_user(self, user: str) -> int | None:
        return await self.sessions.revoke_user(user)

    async def provider(self) -> Provider:
        provider = await self.discovery.get(self.http)
        if self.keys.url != provider.jwks_uri:
            self.keys.url = provider.jwks_uri
            await self.keys.refresh(self.http)
        return provider

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_broker/login", self.login)
        app.router.add_get(CALLBACK, self.callback)
        app.router.add_get("/_broker/logout", self.logout_page)
        app.router.add_post("/_broker/logout", self.logout)
        app.router.add_get(LOGGED_OUT, self.logged_out)

    async def identify(self, request: web.Request) -> Identity | None:
        ticket = get_cookie(request, SESSION_COOKIE)
        try:
            session = await self.sessions.get(ticket)
            refresh = self.settings.session_refresh
            if session and ticket and self.sessions.clock() >= session.checked + refresh:
                session = await refreshed(self, ticket, session)
        except StoreUnavailable:
            raise web.HTTPServiceUnavailable(
                text=UNAVAILABLE, headers={"Retry-After": "5"}
            ) from None
        return session.identity if session else None

    def _client(self, redirect_uri: str) -> AiohttpOAuth2Client:
        secret = self.settings.oidc_client_secret
        client = AiohttpOAuth2Client(
            self.http,
            client_id=self.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            scope=" ".join(self.settings.oidc_scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=self.settings.oidc_token_auth,
        )
        client.register_client_auth_method(("client_secret_basic", _basic_rfc6749))
        return client

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Start a login: remember it (cookie + Redis) and send the browser to the provider."""
        try:
            provider = await self.provider()
        except ProviderUnavailable:
            return problem(
                request,
                503,
                "Login unavailable",
                "The identity provider cannot be reached. Try again in a minute.",
                retry_after=30,
            )
        assert self._pending is not None
        state, nonce, verifier = new_secret(), new_secret(), generate_token(64)
        redirect_uri = public_base(self.settings, request) + CALLBACK
        target = safe_next(request.query.get("next"))
        try:
            client = _client_address(self.settings, request)
            if await self._pending.started_by(client) > self.settings.logins_per_client:
                return problem(
                    request,
                    429,
                    "Too many logins started",
                    "This address started many logins in the last minutes without finishing "
                    "them. Wait a few minutes, then log in once.",
                    retry_after=int(LOGIN_TTL),
                )
            await self._pending.put(
                state, {"n": nonce, "v": verifier, "next": target, "r": redirect_uri}
            )
        except StoreUnavailable:
            return problem(request, 503, "Login unavailable", UNAVAILABLE, retry_after=5)
        url, _ = self._client(redirect_uri).create_authorization_url(
            provider.authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
        )
        response = _redirect(url)
        binding = self.signer.sign("login", {"s": state, "n": digest(nonce)})
        set_cookie(request, response, LOGIN_COOKIE, binding, max_age=LOGIN_TTL)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        try:
            target, ticket = await self._finish(request)
        except LoginFailed as exc:
            log.info("login refused (peer %s): %s", request.remote, exc)
            response = problem(request, 400, "Login failed", str(exc))
        except ProviderUnavailable:
            response = problem(
                request, 503, "Login unavailable", "The identity provider cannot be reached."
            )
        except StoreUnavailable:
            response = problem(request, 503, "Login unavailable", UNAVAILABLE, retry_after=5)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("token request failed: %s", exc)
            response = problem(
                request, 502, "Login failed", "The identity provider did not answer. Try again."
            )
        else:
            response = _redirect(target)
            set_cookie(request, response, SESSION_COOKIE, ticket, max_age=self.settings.session_ttl)
        clear_cookie(request, response, LOGIN_COOKIE)
        return response

    async def _finish(self, request: web.Request) -> tuple[str, str]:
        """Check the callback against this browser's login; returns (next, session ticket)."""
        assert self._pending is not None
        query = request.query
        if "error" in query:
            log.info("provider sent the login back with error %r", query.get("error"))
            raise LoginFailed("The identity provider did not log you in. Try again.")
        state = query.get("state", "")
        binding = self.signer.verify("login", get_cookie(request, LOGIN_COOKIE), max_age=LOGIN_TTL)
        if not state or not binding or not hmac.compare_digest(str(binding.get("s")), state):
            raise LoginFailed(
                "This login was started in another browser or tab, or took too long. Start again."
            )
        record = await self._pending.take(state)
        if not record or not hmac.compare_digest(
            digest(record.get("n", "")), str(binding.get("n"))
        ):
            raise LoginFailed("This login was already used or has expired. Start again.")
        code = query.get("code", "")
        if not code:
            raise LoginFailed("The identity provider sent no authorization code.")
        provider = await self.provider()
        token = await self._client(record["r"]).fetch_token(
            provider.token_endpoint,
            grant_type="authorization_code",
            code=code,
            code_verifier=record["v"],
            headers={
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        claims = await self.verify_id_token(token.get("id_token"), provider, record["n"])
        claims = await self.with_userinfo(claims, token.get("access_token"), provider)
        identity = self.identity_of(claims)
        ticket = await self.sessions.create(
            identity,
            id_token=token["id_token"],
            replaces=get_cookie(request, SESSION_COOKIE),
            tokens=session_tokens(token, self.sessions.clock()),
        )
        log.info("login: %s (sub %s)", identity.user, identity.sub)
        return safe_next(record.get("next")), ticket

    async def refresh_grant(self, provider: Provider, refresh_token: str) -> dict[str, Any]:
        """The token endpoint's answer to a refresh token (RFC 6749 6), same scope."""
        client = self._client("")
        client.scope = None  # omitted: the scope granted at login (RFC 6749 6)
        return await client.fetch_token(
            provider.token_endpoint,
            grant_type="refresh_token",
            refresh_token=refresh_token,
            headers={"Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip

    async def verify_id_token(
        self, id_token: object, provider: Provider, nonce: str | None
    ) -> dict[str, Any]:
        """The ID token's claims; `nonce` None for one from a refresh (Core 12.2)."""
        if not isinstance(id_token, str):
            raise LoginFailed(
                "The identity provider sent no ID token (is `openid` in the scopes?)."
            )
        try:
            claims = await verify(
                id_token,
                self.keys,
                self.http,
                algorithms=provider.algorithms,
                require_kid=False,
                claims={
                    "iss": essential(provider.issuer),
                    "aud": essential(self.client_id),
                    "exp": essential(),
                    "iat": essential(),
                    "sub": essential(),
                    **({"nonce": essential(nonce)} if nonce is not None else {}),
                },
            )
        except TokenRejected as exc:
            log.warning("ID token refused: %s", exc)
            raise LoginFailed("The identity provider's answer could not be verified.") from None
        audiences = [claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]
        if self.client_id not in audiences or (
            (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self.client_id
        ):
            log.warning("ID token refused: aud %r azp %r", claims["aud"], claims.get("azp"))
            raise LoginFailed("The identity provider's answer was meant for another application.")
        return claims

    async def with_userinfo(
        self, claims: dict[str, Any], access: object, provider: Provider
    ) -> dict[str, Any]:
        """The ID token's claims, completed from the userinfo endpoint where they lack what
        we need. OpenID Connect Core 5.4 lets a provider put only `sub` in the ID token and
        serve the rest at userinfo (panva's certified oidc-provider does so by default);
        5.3.2: the userinfo answer's `sub` must be the ID token's, or it is someone else's."""
        wanted = ["email", self.settings.oidc_groups_claim.split(".")[0]]
        if self.settings.oidc_require_verified_email:
            wanted.append("email_verified")
        if all(k in claims for k in wanted) or not provider.userinfo_endpoint or not access:
            return claims
        info = await fetch_userinfo(self.http, provider, str(access), claims["sub"])
        return {**info, **claims}  # what the signed ID token says wins

    def identity_of(self, claims: dict[str, Any]) -> Identity:
        """Who logged in. SDB_OIDC_USER_CLAIM=email (default) keys people on their address;
        =sub keys them on the provider's own id (`HOST/SUB`), which an address change or a
        reused address never moves, and then an unverified address is kept for nothing."""
        by_sub = self.settings.oidc_user_claim == "sub"
        email = claims.get("email")
        verified = claims.get("email_verified") in (True, "true")
        if not isinstance(email, str) or not email.strip() or len(email) > 254:
            if not by_sub:
                raise LoginFailed("The identity provider did not tell us your email address.")
            email = ""
        if email and self.settings.oidc_require_verified_email and not verified and not by_sub:
            raise LoginFailed(
                f"Your identity provider has not verified the address {email}. Verify it there, "
                "then log in again."
            )
        email = email.strip().lower()
        groups = claim_groups(claims, self.settings.oidc_groups_claim)
        if by_sub:
            host = urlsplit(self.settings.oidc_issuer or "").hostname or "oidc"
            user = f"{host}/{claims['sub']}"[:256]
            return Identity(user=user, email=email if verified else "", groups=groups,
                            sub=claims["sub"])  # fmt: skip
        return Identity(user=email, email=email, groups=groups, sub=claims["sub"])

    async def logout(self, request: web.Request) -> web.Response:
        """End the broker session, then the provider's when it has an end_session_endpoint."""
        await self.logout_form(request)
        ticket = get_cookie(request, SESSION_COOKIE)
        session = await self.sessions.get(ticket)
        if ticket:
            await self.sessions.revoke_ticket(ticket)
        location = LOGGED_OUT
        try:
            provider = await self.provider()
        except ProviderUnavailable:
            provider = None
        if provider and provider.end_session_endpoint:
            params = [
                ("client_id", self.client_id),
                ("post_logout_redirect_uri", public_base(self.settings, request) + LOGGED_OUT),
            ]
            if session and session.id_token:
                params.append(("id_token_hint", session.id_token))
            location = add_params_to_uri(provider.end_session_endpoint, params)
        if session:
            log.info("logout: %s", session.identity.user)
        response = _redirect(location)
        clear_cookie(request, response, SESSION_COOKIE)
        return response

    async def logged_out(self, request: web.Request) -> web.Response:
        return aiohttp_jinja2.render_template("logged_out.html", request, {})


def claim_groups(claims: dict[str, Any], path: str) -> tuple[str, ...]:
    """Groups from a claim; a dotted path reaches nested ones (Keycloak realm_access.roles)."""
    value: Any = claims.get(path)  # names may hold dots themselves (https://x.example/groups)
    if value is None:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(str(g) for g in value if isinstance(g, str | int))[:256]


def _basic_rfc6749(client: Any, method: str, uri: str, headers: dict, body: Any) -> tuple:
    """HTTP Basic as RFC 6749 2.3.1 wants it: id and secret form-urlencoded first. authlib
    sends them raw (authlib#628), so a secret with `+`, `%` or `:` failed at providers
    that decode (Keycloak's BasicAuthHelper.RFC6749, Java's URLDecoder: `+` is a space)."""
    text = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(text.encode()).decode("ascii")
    return uri, headers, body


def _client_address(settings: Any, request: web.Request) -> str:
    """The browser's address: the last hop a trusted proxy appended, else the peer."""
    peer = request.remote or "unknown"
    if settings.is_trusted_proxy(peer):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        return forwarded[:64] or peer
    return peer
