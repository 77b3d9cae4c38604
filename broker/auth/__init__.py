"""Ways to log in; `make_authenticator` picks one by SDB_AUTH."""

from __future__ import annotations

from ..security.signing import Signer
from ..settings import Settings
from .base import Authenticator


def make_authenticator(settings: Settings, signer: Signer) -> Authenticator:
    if settings.auth == "dev":
        from .dev import DevAuthenticator

        return DevAuthenticator(settings, signer)
    if settings.auth == "header":
        from .header import HeaderAuthenticator

        return HeaderAuthenticator(settings, signer)
    if settings.auth == "iap":
        from .iap import IapAuthenticator

        return IapAuthenticator(settings, signer)
    if settings.auth == "oidc":
        from .oidc import OidcAuthenticator

        return OidcAuthenticator(settings, signer)
    raise ValueError(f"unknown SDB_AUTH {settings.auth!r}")


__all__ = ["Authenticator", "make_authenticator"]
