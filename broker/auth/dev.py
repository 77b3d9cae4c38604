"""`dev` login: type a name, get a signed session cookie. Loopback only.

For demos and tests on one machine; the broker refuses to start in this mode
on any address but loopback, since anyone could claim any name.
"""

from __future__ import annotations

import re

import aiohttp_jinja2
from aiohttp import web

from ..identity import Identity
from ..security.csrf import CSRF_FIELD, attach_csrf_cookie, csrf_ok, csrf_token
from ..security.redirects import safe_next
from .base import Authenticator
from .session_cookie import end_session, read_session, write_session

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class DevAuthenticator(Authenticator):
    async def identify(self, request: web.Request) -> Identity | None:
        return read_session(request, self.signer, self.settings.session_ttl)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_broker/login", self.login_page)
        app.router.add_post("/_broker/login", self.login)
        app.router.add_get("/_broker/logout", self.logout_page)
        app.router.add_post("/_broker/logout", self.logout)

    def _form(
        self, request: web.Request, *, error: str = "", name: str = "", status: int = 200
    ) -> web.Response:
        response = aiohttp_jinja2.render_template(
            "login.html",
            request,
            {
                "next": safe_next(request.query.get("next")),
                "csrf_field": CSRF_FIELD,
                "csrf_token": csrf_token(request, self.signer, user=""),  # before login
                "error": error,
                "name": name,
            },
            status=status,
        )
        attach_csrf_cookie(request, response)
        return response

    async def login_page(self, request: web.Request) -> web.Response:
        return self._form(request)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        name = str(form.get("user", "")).strip()
        target = safe_next(str(form.get("next", "/")))
        if not csrf_ok(request, self.signer, str(form.get(CSRF_FIELD, "")), user=""):
            return self._form(
                request, error="Your login form expired. Please try again.", name=name, status=403
            )
        if not NAME.match(name):
            return self._form(
                request,
                error="A name is 1 to 64 letters, digits or . _ @ + - and starts with a letter or digit.",
                name=name,
                status=400,
            )
        response = web.HTTPFound(target)
        write_session(
            request, response, self.signer, Identity(user=name), self.settings.session_ttl
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        await self.logout_form(request)
        response = web.HTTPFound("/_broker/login")
        end_session(request, response)
        return response
