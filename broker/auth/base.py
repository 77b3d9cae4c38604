"""The one interface of every way to log in (dev, header, iap, oidc)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import aiohttp_jinja2
from aiohttp import web

from ..identity import Identity
from ..security.csrf import CSRF_FIELD, attach_csrf_cookie, csrf_ok, csrf_token
from ..security.signing import Signer
from ..settings import Settings


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

    async def revoke_user(self, user: str) -> int | None:
        """End every login of `user` now, on every replica; how many there were. None: this
        mode keeps no logins of its own to end (the proxy in front, or IAP, holds them)."""
        return None

    def add_routes(self, app: web.Application) -> None:
        """Login/logout/callback pages under /_broker/."""

    async def startup(self, app: web.Application) -> None:
        """Fetch discovery documents, keys... (called from the app's cleanup context)."""

    async def logout_page(self, request: web.Request) -> web.Response:
        """A form, not a link: logging out is a POST with a CSRF token."""
        identity = await self.identify(request)
        response = aiohttp_jinja2.render_template(
            "logout.html",
            request,
            {
                "identity": identity,
                "csrf_field": CSRF_FIELD,
                "csrf_token": csrf_token(request, self.signer, user=_user(identity)),
            },
        )
        attach_csrf_cookie(request, response)
        return response

    async def logout_form(self, request: web.Request) -> None:
        """Read the logout POST; a missing or forged CSRF token is 403."""
        form = await request.post()
        user = _user(await self.identify(request))
        if not csrf_ok(request, self.signer, str(form.get(CSRF_FIELD, "")), user=user):
            raise web.HTTPForbidden(text="The logout form expired; reload the page and try again.")


def _user(identity: object) -> str:
    """Whom a logout form is for: the identity's user, "" when nobody is logged in."""
    return getattr(identity, "user", "") or ""
