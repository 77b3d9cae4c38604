"""Refresh tokens for the test provider (RFC 6749 section 6), rotated on every use as
Keycloak and Okta do: what the broker's session refresh asks with. With
`provider.refresh_id_token` the answer also carries a new ID token, as Keycloak's
does (OpenID Connect Core 12.2: same iss, sub, aud; no nonce)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import grants
from joserfc import jwt

if TYPE_CHECKING:
    from .provider import Client, Provider, User


@dataclass
class RefreshToken:
    token: str
    client_id: str
    username: str
    scope: str
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope


class RefreshGrant(grants.RefreshTokenGrant):
    """RFC 6749 6, each refresh token usable once (a new one comes with every answer)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True
    provider: Provider  # set on the subclass made per provider

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        self.provider.refreshes += 1
        found = self.provider.refresh_store.get(refresh_token)
        return found if found is not None and not found.revoked else None

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        return self.provider.users.get(refresh_token.username)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        refresh_token.revoked = True

    def issue_token(self, user: User, refresh_token: RefreshToken) -> dict[str, Any]:
        token = super().issue_token(user, refresh_token)
        if self.provider.refresh_id_token:
            now = int(time.time())
            claims = {
                **self.provider.claims_of(user, refresh_token.get_scope()),
                "iss": self.provider.issuer,
                "aud": refresh_token.client_id,
                "iat": now,
                "exp": now + 300,
                **self.provider.tamper,
            }
            header = {"alg": "RS256", "kid": self.provider.kid}
            token["id_token"] = jwt.encode(header, claims, self.provider.key)
        return token
