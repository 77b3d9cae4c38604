"""A real OpenID provider for the tests, built from authlib's server components.

Discovery, JWKS, authorize (a login form, then single sign-on by cookie), token
(authorization code with PKCE S256 required, codes usable once; refresh tokens,
rotated on use as Keycloak and Okta do), userinfo and RP-initiated end-session,
served on a loopback address of its own (127.0.0.2) so the browser keeps its
cookies apart from the broker's. Tests steer it through attributes: `users`
(whose groups a test may change), `tamper` (claims forced into the next ID
tokens), `issue_refresh_tokens`, `refresh_id_token`, `access_ttl`, and the counters
it keeps.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, UserInfo
from authlib.oidc.rpinitiated import EndSessionEndpoint
from joserfc.jwk import KeySet, RSAKey
from multidict import MultiDict, MultiDictProxy

from .provider_refresh import RefreshGrant, RefreshToken
from .servers import ThreadedServer

CLIENT_ID = "sdbroker-test"
CLIENT_SECRET = "s3cret-for-tests"
SSO_COOKIE = "op_sso"


@dataclass
class User:
    username: str
    email: str
    email_verified: bool = True
    groups: tuple[str, ...] = ()

    @property
    def sub(self) -> str:
        return "sub-" + self.username


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    provider: Any = field(default=None, repr=False, compare=False)

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile", "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """The code grant; refresh tokens (asked at login too) while the provider issues them."""
        if grant_type == "refresh_token":
            return bool(self.provider and self.provider.issue_refresh_tokens)
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    username: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class _Payload(OAuth2Payload):
    def __init__(self, data: MultiDictProxy[str] | MultiDict[str]) -> None:
        self._multi = data

    @property
    def data(self) -> dict[str, str]:
        return {k: self._multi[k] for k in self._multi}

    @property
    def datalist(self) -> defaultdict[str, list]:
        values: defaultdict[str, list] = defaultdict(list)
        for k, v in self._multi.items():
            values[k].append(v)
        return values


class _Request(OAuth2Request):
    """authlib's request over an aiohttp request whose body was already read."""

    def __init__(self, request: web.Request, data: MultiDictProxy[str] | MultiDict[str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self.payload = _Payload(data)
        self._args = request.query
        self._form = data

    @property
    def args(self) -> MultiDictProxy[str]:
        return self._args

    @property
    def form(self) -> MultiDictProxy[str] | MultiDict[str]:
        return self._form


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    provider: Provider  # set on the subclass made per provider

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.provider.codes[code] = Code(
            code=code,
            client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri,
            scope=request.payload.scope,
            username=request.user.username,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.provider.codes.get(code)
        if found is None:
            self.provider.replays += code in self.provider.used_codes
            return None
        return found if found.client_id == client.get_client_id() else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.provider.codes.pop(authorization_code.code, None)
        self.provider.used_codes.add(authorization_code.code)

    def authenticate_user(self, authorization_code: Code) -> User:
        return self.provider.users[authorization_code.username]


class StrictPkce(CodeChallenge):
    """PKCE is not optional here, and only S256: proves the broker sends it."""

    def validate_code_challenge(
        self, grant: grants.AuthorizationCodeGrant, redirect_uri: str
    ) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise OAuth2Error(error="invalid_request", description="PKCE S256 required")
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):
    def __init__(self, provider: Provider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.provider.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.provider.kid}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": self.provider.issuer, "aud": client.get_client_id()}

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        """The ID token's claims: only `sub` when the provider serves the rest at userinfo
        (OIDC Core 5.4; panva's oidc-provider, `conformIdTokenClaims` on by default)."""
        if self.provider.userinfo_only:
            info = UserInfo(sub=user.sub)
        else:
            info = self.provider.claims_of(user, scope)
        info.update(self.provider.tamper)  # after the standard claims: it can override any
        return info


class EndSession(EndSessionEndpoint):
    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider

    def get_server_jwks(self) -> KeySet:
        return KeySet([self.provider.key])

    def end_session(self, end_session_request: Any) -> None:
        claims = end_session_request.id_token_claims or {}
        self.provider.ended.append(claims.get("sub", ""))


def _basic_form_decoded(query_client: Any, request: OAuth2Request) -> Client | None:
    """client_secret_basic as RFC 6749 2.3.1 and the providers that follow it read it: id
    and secret form-urldecoded, `+` a space (Keycloak 26, `BasicAuthHelper.RFC6749
    .parseHeader` with Java's URLDecoder; authlib's own server only `unquote`s)."""
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(auth.split(None, 1)[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, _, secret = raw.partition(":")
    client = query_client(unquote_plus(client_id))
    if client is not None and client.check_client_secret(unquote_plus(secret)):
        return client
    return None


class _Server(AuthorizationServer):
    def __init__(self, provider: Provider) -> None:
        super().__init__(scopes_supported=["openid", "email", "profile", "groups"])
        self.provider = provider
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                lambda *a, **k: generate_token(42),
                lambda *a, **k: generate_token(48),
                lambda client, grant_type: provider.access_ttl,
            ),
        )
        self.register_client_auth_method("client_secret_basic", _basic_form_decoded)

    def query_client(self, client_id: str) -> Client | None:
        return self.provider.clients.get(client_id)

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        # the code or refresh token the answer was for, and its user
        grant = getattr(request, "authorization_code", None) or getattr(
            request, "refresh_token", None
        )
        scope = grant.get_scope() if grant is not None else (request.scope or "")
        expires = time.time() + token.get("expires_in", 3600)
        self.provider.access_tokens[token["access_token"]] = (request.user, scope, expires)
        if "refresh_token" in token:
            self.provider.refresh_store[token["refresh_token"]] = RefreshToken(
                token["refresh_token"], request.client.get_client_id(), request.user.username, scope
            )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # handlers build _Request themselves, after reading the body

    def handle_response(self, status: int, body: Any, headers: list) -> web.Response:
        text = json.dumps(body) if isinstance(body, dict) else (body or "")
        response = web.Response(status=status, text=text, headers=MultiDict(headers))
        if isinstance(body, dict):
            response.content_type = "application/json"
        return response


class Provider:
    def __init__(self, host: str = "127.0.0.2") -> None:
        self.kid = "op-key-1"
        self.key = RSAKey.generate_key(2048, parameters={"kid": self.kid}, private=True)
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.used_codes: set[str] = set()
        self.sso: dict[str, str] = {}  # SSO cookie -> username
        self.tamper: dict[str, Any] = {}
        self.userinfo_only = False  # ID tokens carry only `sub`; the rest is at /userinfo
        self.userinfo_tamper: dict[str, Any] = {}
        self.access_tokens: dict[str, tuple[User, str, float]] = {}  # -> user, scope, expiry
        self.issue_refresh_tokens = True  # as Keycloak does by default
        self.access_ttl = 3600  # seconds
        self.refresh_store: dict[str, RefreshToken] = {}
        self.refresh_id_token = False  # a new ID token in each refresh answer
        self.refreshes = 0
        self.userinfo_calls = 0
        self.replays = 0
        self.ended: list[str] = []
        self.jwks_hits = 0
        self.server = _Server(self)
        grant = type("Grant", (CodeGrant,), {"provider": self})
        self.server.register_grant(grant, [IdToken(self), StrictPkce(required=True)])
        self.server.register_grant(type("Refresh", (RefreshGrant,), {"provider": self}))
        self.server.register_endpoint(EndSession(self))
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/end-session", self.end_session)
        app.router.add_get("/userinfo", self.userinfo)
        self.http = ThreadedServer(app, host=host)

    @property
    def issuer(self) -> str:
        return self.http.url

    def start(self) -> Provider:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def add_client(
        self, broker_url: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET
    ) -> None:
        self.clients[client_id] = Client(
            client_id,
            secret,
            [broker_url + "/_broker/callback"],
            [broker_url + "/_broker/logged-out"],
            provider=self,
        )

    def add_user(self, username: str, email: str, **kw: Any) -> User:
        self.users[username] = user = User(username, email, **kw)
        return user

    def revoke_refresh_tokens(self, username: str) -> None:
        """What disabling a person at the provider does to the tokens it gave out."""
        for token in self.refresh_store.values():
            if token.username == username:
                token.revoked = True

    async def discovery(self, request: web.Request) -> web.Response:
        iss = self.issuer
        return web.json_response(
            {
                "issuer": iss,
                "authorization_endpoint": iss + "/authorize",
                "token_endpoint": iss + "/token",
                "jwks_uri": iss + "/jwks",
                "end_session_endpoint": iss + "/end-session",
                "userinfo_endpoint": iss + "/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile", "groups"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        public = self.key.as_dict(private=False)
        return web.json_response(
            {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        )

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """GET shows the login form (or signs in by SSO cookie); POST submits it."""
        form = await request.post() if request.method == "POST" else None
        query = MultiDict(request.query) if form is None else MultiDict(_qs(str(form.get("q", ""))))
        oauth = _Request(request, query)
        try:
            grant = self.server.get_consent_grant(oauth, end_user=None)
        except OAuth2Error as exc:
            return web.Response(status=400, text=f"authorize error: {exc.error} {exc.description}")
        user = self.users.get(self.sso.get(request.cookies.get(SSO_COOKIE, ""), ""))
        if form is not None:
            user = self.users.get(str(form.get("username", "")))
            if user is None:
                return _login_form(request.query_string or str(form.get("q", "")), "Unknown user")
        if user is None:
            return _login_form(request.query_string, "")
        response = self.server.create_authorization_response(oauth, grant_user=user, grant=grant)
        sso = secrets.token_urlsafe(16)
        self.sso[sso] = user.username
        response.set_cookie(SSO_COOKIE, sso, path="/", httponly=True, samesite="Lax")
        return response

    def claims_of(self, user: User, scope: str) -> UserInfo:
        info = UserInfo(sub=user.sub, name=user.username)
        if "email" in scope.split():
            info.update(email=user.email, email_verified=user.email_verified)
        info["groups"] = list(user.groups)
        return info

    async def userinfo(self, request: web.Request) -> web.Response:
        """OIDC Core 5.3: the claims of the access token's user, for a Bearer token."""
        self.userinfo_calls += 1
        auth = request.headers.get("Authorization", "")
        found = self.access_tokens.get(auth.removeprefix("Bearer ").strip())
        if not auth.startswith("Bearer ") or found is None or found[2] < time.time():
            return web.json_response({"error": "invalid_token"}, status=401)
        user, scope, _ = found
        return web.json_response({**self.claims_of(user, scope), **self.userinfo_tamper})

    async def token(self, request: web.Request) -> web.Response:
        return self.server.create_token_response(_Request(request, await request.post()))

    async def end_session(self, request: web.Request) -> web.Response:
        self.sso.pop(request.cookies.get(SSO_COOKIE, ""), None)
        response = self.server.create_endpoint_response(
            "end_session", _Request(request, request.query)
        )
        if response is None:
            response = web.Response(text="logged out of the provider", content_type="text/plain")
        response.del_cookie(SSO_COOKIE, path="/")
        return response


def _qs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def _login_form(query: str, error: str) -> web.Response:
    from html import escape

    page = f"""<!doctype html><title>Test provider</title><h1>Test identity provider</h1>
<p id="op-error">{escape(error)}</p>
<form method="post" action="/authorize"><input type="hidden" name="q" value="{escape(query)}">
<input id="username" name="username" autofocus><button id="op-login" type="submit">Sign in</button>
</form>"""
    return web.Response(text=page, content_type="text/html")


def oidc_broker(start_broker: Any, provider: Provider, **env: Any) -> Any:
    """A broker in oidc mode at this provider (its client registered first); `env` adds
    or overrides settings (SDB_WORKERS, allow lists...). Returns a tests.support Broker."""
    client_id = env.pop("SDB_OIDC_CLIENT_ID", CLIENT_ID)
    secret = env.pop("client_secret", CLIENT_SECRET)
    return start_broker(
        lambda b: provider.add_client(b.url, client_id, secret),
        **{"SDB_AUTH": "oidc", "SDB_OIDC_ISSUER": provider.issuer,
           "SDB_OIDC_CLIENT_ID": client_id, "SDB_OIDC_CLIENT_SECRET": secret, **env},
    )  # fmt: skip
