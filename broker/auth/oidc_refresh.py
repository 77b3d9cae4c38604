"""An oidc session asks the provider again every SDB_SESSION_REFRESH: is this still
the person who logged in, with which groups and address?

Groups were read once, at login, and a session lasts SDB_SESSION_TTL (12 h): someone
taken out of SDB_ALLOWED_GROUPS or SDB_ADMIN_GROUPS at the provider kept access, or
admin, until then. Now the first request after SDB_SESSION_REFRESH (one worker of one
replica, `SessionStore.claim_refresh`) asks the provider with

1. the refresh token (RFC 6749 section 6), when the provider gave one (Keycloak by
   default; Entra ID, Okta, Auth0 with `offline_access` in SDB_OIDC_SCOPES): a new
   access token, and a new ID token if the provider sends one, held to OpenID Connect
   Core 1.0 section 12.2 (same iss, sub and aud; no nonce: a refresh is no
   authentication request, errata issue 1025);
2. else the access token from the login, while it lasts;

and reads what that answer lacks (groups, address) from userinfo (Core 5.3, `sub`
must match). The new groups and address are stored; security/access.py applies the allow
and admin lists on every request, so the next request is judged by them.

The session ends (its next page load goes through the provider) when the provider
refuses (an OAuth error such as invalid_grant: the person was disabled or logged
out there; userinfo 401) or when the answer names someone else. An unreachable
provider (network, 5xx) ends nobody: the session keeps what it had and asks again
after RETRY. A session the provider can no longer be asked about (no refresh token,
the access token expired: Google's logins, sessions from before tokens were kept)
keeps what it had until SDB_SESSION_TTL, as before: ending it would answer an open
WebUI's background requests, mid-generation perhaps, with 401 every hour, while a
re-login would learn nothing new (Google's ID tokens carry no groups).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp

from .oidc_provider import LoginFailed, Provider, ProviderUnavailable
from .sessions import Session, unseal

if TYPE_CHECKING:
    from .oidc import OidcAuthenticator

log = logging.getLogger(__name__)


class CannotAsk(Exception):
    """Nothing left to ask the provider with: no refresh token, the access token expired."""


RETRY = 60.0  # seconds before an unreachable provider is asked again
USERINFO_TIMEOUT = aiohttp.ClientTimeout(total=10)
USERINFO_MAX = 64 * 1024  # a userinfo answer is a few hundred bytes
EARLY = 10.0  # an access token this close to its expiry counts as expired


def session_tokens(answer: dict[str, Any], now: float, before: dict[str, Any] | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    """What a session keeps of a token endpoint's answer; a refresh answer without a
    new refresh token leaves the old one in force (RFC 6749 6: the server MAY issue one)."""
    expires_in = answer.get("expires_in")
    refresh = answer.get("refresh_token") or (before or {}).get("refresh")
    return {
        "access": str(answer.get("access_token") or ""),
        "refresh": str(refresh or ""),
        "expires_at": now + float(expires_in) if isinstance(expires_in, int | float) else None,
    }


async def fetch_userinfo(
    http: aiohttp.ClientSession, provider: Provider, access: str, sub: str
) -> dict[str, Any]:
    """The userinfo claims for `access`, whose `sub` must be `sub` (Core 5.3.2). An
    unreachable provider or a 5xx is ProviderUnavailable; a refusal is LoginFailed."""
    assert provider.userinfo_endpoint
    try:
        async with http.get(
            provider.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
            timeout=USERINFO_TIMEOUT,
        ) as resp:
            if resp.status >= 500:
                raise ProviderUnavailable(f"userinfo answered HTTP {resp.status}")
            resp.raise_for_status()
            body = bytearray()
            async for chunk in resp.content.iter_chunked(8192):
                body += chunk
                if len(body) > USERINFO_MAX:
                    raise ValueError(f"answer over {USERINFO_MAX} bytes")
            info = json.loads(body)
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        log.warning("userinfo at %s unreachable: %s", provider.userinfo_endpoint, exc)
        raise ProviderUnavailable(str(exc)) from None
    except (aiohttp.ClientError, ValueError) as exc:
        log.warning("userinfo at %s failed: %s", provider.userinfo_endpoint, exc)
        raise LoginFailed("The identity provider did not tell us who you are. Try again.") from None
    if not isinstance(info, dict) or info.get("sub") != sub:
        log.warning(
            "userinfo refused: sub %r, not the ID token's %r",
            info.get("sub") if isinstance(info, dict) else None,
            sub,
        )
        raise LoginFailed("The identity provider's answers did not agree about who you are.")
    return info


async def refreshed(auth: OidcAuthenticator, ticket: str, session: Session) -> Session | None:
    """The session as the provider now vouches for it; None once it is over. A request
    that finds another worker already asking goes on with what it has."""
    store = auth.sessions
    now = store.clock()
    if not await store.claim_refresh(session, now):
        return session
    who = session.identity.user
    try:
        claims, tokens = await _ask(auth, ticket, session, now)
        identity = auth.identity_of(claims)
        if identity.user != who:
            raise LoginFailed(f"the provider now names {identity.user!r}")
    except (ProviderUnavailable, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("session of %s: provider unreachable at refresh (%s); kept", who, exc)
        retry = now - auth.settings.session_refresh + RETRY
        return await store.update(session, ticket, checked=retry)
    except CannotAsk:
        log.debug("session of %s: nothing to ask the provider with; kept as it is", who)
        return await store.update(session, ticket, checked=now)
    except LoginFailed as exc:
        log.info("session of %s ended at refresh: %s", who, exc)
        await store.revoke(session.id)
        return None
    if identity.groups != session.identity.groups:
        log.info("groups of %s now %s (were %s)", who, identity.groups, session.identity.groups)
    return await store.update(session, ticket, checked=now, identity=identity, tokens=tokens)


async def _ask(
    auth: OidcAuthenticator, ticket: str, session: Session, now: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(claims, tokens to keep) from the provider, by the first way that applies."""
    tokens = unseal(ticket, session.tokens)
    provider = await auth.provider()
    sub = session.identity.sub
    claims: dict[str, Any] = {"sub": sub}
    if tokens.get("refresh"):
        answer = await auth.refresh_grant(provider, tokens["refresh"])
        tokens = session_tokens(answer, now, tokens)
        if isinstance(answer.get("id_token"), str):
            claims = await auth.verify_id_token(answer["id_token"], provider, None)
            if claims["sub"] != sub:
                raise LoginFailed("the provider's new ID token is about someone else")
    elif not tokens.get("access") or (tokens.get("expires_at") or now + EARLY + 1) < now + EARLY:
        raise CannotAsk
    return await auth.with_userinfo(claims, tokens["access"], provider), tokens
