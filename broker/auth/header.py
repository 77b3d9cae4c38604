"""`header` login: an authenticating proxy in front (oauth2-proxy, nginx) names the user.

The header is believed only when the TCP peer is inside SDB_TRUSTED_PROXIES;
from anywhere else the request is 401, and the header was already dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from ..identity import Identity
from .base import Authenticator

log = logging.getLogger(__name__)


class HeaderAuthenticator(Authenticator):
    interactive = False
    default_logout_url = "/oauth2/sign_out"  # oauth2-proxy's

    def kept_headers(self, request: web.Request) -> Iterable[str]:
        if self.settings.is_trusted_proxy(request.remote):
            return (
                self.settings.auth_header,
                self.settings.auth_email_header,
                self.settings.auth_groups_header,
            )
        return ()

    async def identify(self, request: web.Request) -> Identity | None:
        if not self.settings.is_trusted_proxy(request.remote):
            return None
        names = (
            self.settings.auth_header,
            self.settings.auth_email_header,
            self.settings.auth_groups_header,
        )
        if any(len(request.headers.getall(name, ())) > 1 for name in names):
            # Which one would the proxy have set? A proxy that appends instead of
            # replacing leaves the client's copy first: believe neither.
            log.warning("refused a request with an identity header twice (%s)", request.path)
            return None
        user = request.headers.get(self.settings.auth_header, "").strip()
        if not user or len(user) > 256 or any(ord(c) < 0x20 for c in user):
            return None
        email = request.headers.get(self.settings.auth_email_header, "").strip()
        if not email and "@" in user:
            email = user
        raw_groups = request.headers.get(self.settings.auth_groups_header, "")
        groups = tuple(g.strip() for g in raw_groups.split(",") if g.strip())[:256]
        return Identity(user=user, email=email[:256], groups=groups)
