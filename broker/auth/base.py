"""The one interface of every way to log in (dev, header, iap, oidc)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from aiohttp import web

from ..identity import Identity
from ..settings import Settings
from ..signing import Signer


class Authenticator(ABC):
    #: True when the broker shows its own login page (dev, oidc) and redirects there.
    interactive: bool = True
    #: Where a person logs out when SDB_LOGOUT_URL does not say (shown on the refused page).
    default_logout_url: str = "/_broker/logout"

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer

    @property
    def logout_url(self) -> str:
        return self.settings.logout_url or self.default_logout_url

    def kept_headers(self, request: web.Request) -> Iterable[str]:
        """Identity-looking headers this mode trusts on this request (e.g. from a trusted proxy)."""
        return ()

    @abstractmethod
    async def identify(self, request: web.Request) -> Identity | None:
        """Who sent the request, or None when unauthenticated."""

    def add_routes(self, app: web.Application) -> None:
        """Login/logout/callback pages under /_broker/."""

    async def startup(self, app: web.Application) -> None:
        """Fetch discovery documents, keys... (called from the app's cleanup context)."""
