"""The OpenID provider as the broker's client sees it: discovery, token requests, URLs.

Discovery is cached for SDB_JWKS_CACHE_TTL and a stale copy beats none when
the provider is briefly down. The document must name the configured issuer
(OIDC Discovery 4.3, against mix-ups) and https endpoints (http only on
loopback). Token requests go through authlib's OAuth 2 client, which builds
the PKCE and client-authentication parts, sent over the broker's one aiohttp
session.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from authlib.common.security import is_secure_transport
from authlib.oauth2.client import OAuth2Client

from ..security.cookies import is_https
from ..settings import Settings
from .jwks import KEY_TYPES

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=10)
RETRY = 30.0  # seconds before a failed discovery is tried again while a stale copy serves
HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")


class ProviderUnavailable(Exception):
    """Discovery failed and there is no earlier document to fall back on."""


class LoginFailed(Exception):
    """A callback that does not complete a login; the message is for the person."""


@dataclass(frozen=True, slots=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: tuple[str, ...]
    userinfo_endpoint: str | None = None


class Discovery:
    """`/.well-known/openid-configuration`, kept for SDB_JWKS_CACHE_TTL; a stale copy beats none."""

    def __init__(self, issuer: str, *, ttl: float) -> None:
        self.issuer = issuer
        self.ttl = ttl
        self._provider: Provider | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, http: aiohttp.ClientSession) -> Provider:
        async with self._lock:
            if self._provider is None or time.monotonic() - self._fetched_at >= self.ttl:
                try:
                    self._provider = await self._fetch(http)
                    self._fetched_at = time.monotonic()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("OIDC discovery at %s failed: %s", self.issuer, exc)
                    if self._provider is None:
                        raise ProviderUnavailable(str(exc)) from None
                    self._fetched_at = time.monotonic() - self.ttl + RETRY  # stale; retry soon
            return self._provider

    async def _fetch(self, http: aiohttp.ClientSession) -> Provider:
        url = self.issuer + "/.well-known/openid-configuration"
        async with http.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT) as resp:
            resp.raise_for_status()
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict):
            raise ValueError("discovery document is not a JSON object")
        if doc.get("issuer") != self.issuer:  # OIDC Discovery 4.3: mix-up protection
            raise ValueError(f"discovery names issuer {doc.get('issuer')!r}, not {self.issuer!r}")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not is_secure_transport(value):
                raise ValueError(f"{name} missing or not https: {value!r}")
            endpoints[name] = value
        end_session = doc.get("end_session_endpoint")
        if not (isinstance(end_session, str) and is_secure_transport(end_session)):
            end_session = None
        userinfo = doc.get("userinfo_endpoint")
        if not (isinstance(userinfo, str) and is_secure_transport(userinfo)):
            userinfo = None
        offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in offered if a in KEY_TYPES) or ("RS256",)
        return Provider(
            self.issuer,
            **endpoints,
            end_session_endpoint=end_session,
            algorithms=algorithms,
            userinfo_endpoint=userinfo,
        )


class AiohttpOAuth2Client(OAuth2Client):
    """authlib's OAuth 2 client over the broker's one aiohttp session (authlib has no
    aiohttp integration): authlib builds the requests, PKCE and client authentication."""

    async def _fetch_token(
        self,
        url: str,
        body: str = "",
        headers: dict[str, str] | None = None,
        auth: Any = None,
        method: str = "POST",
        **kwargs: Any,
    ) -> dict[str, Any]:
        url, headers, body = auth.prepare(method, url, dict(headers or {}), body)
        async with self.session.post(url, data=body, headers=headers, timeout=TIMEOUT) as resp:
            status = resp.status
            try:
                token = await resp.json(content_type=None)
            except ValueError:
                token = None
        if status >= 500 or (
            isinstance(token, dict) and token.get("error") == "temporarily_unavailable"
        ):
            raise ProviderUnavailable(f"the token endpoint answered HTTP {status}")
        if not isinstance(token, dict):
            raise LoginFailed(f"The identity provider's token endpoint answered HTTP {status}.")
        if token.get("error") == "invalid_client":
            log.error("the token endpoint refused the broker's client id or secret: %s", token)
            raise LoginFailed(
                "The identity provider did not accept this site's own credentials, so nobody "
                "can log in. The site's admin must check SDB_OIDC_CLIENT_ID and its secret."
            )
        if "error" in token:
            log.info("token endpoint refused the code: %s", token.get("error"))
            raise LoginFailed("The identity provider refused this login (the code may be used up).")
        self.token = token
        return token


def public_base(settings: Settings, request: web.Request) -> str:
    """Origin for the URLs the provider sends browsers back to."""
    if settings.public_url:
        return settings.public_url
    if settings.is_trusted_proxy(request.remote) and HOST.fullmatch(request.host):
        return f"{'https' if is_https(request) else 'http'}://{request.host}"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"
