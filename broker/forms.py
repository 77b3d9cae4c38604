"""The broker's own forms: every page with a form carries this browser's CSRF token for
this person, and every POST is checked against it before anything is done.

One place for both halves, so a new page cannot forget either (chooser, ended page,
the person's home, the admin console).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from .appkeys import SIGNER
from .pages import problem
from .security.csrf import CSRF_FIELD, attach_csrf_cookie, csrf_ok, csrf_token


def form_page(
    request: web.Request, template: str, context: Mapping[str, Any], *, user: str
) -> web.Response:
    """TEMPLATE rendered with the CSRF field and token for USER, and its cookie set."""
    token = csrf_token(request, request.app[SIGNER], user=user)
    response = aiohttp_jinja2.render_template(
        template, request, {**context, "csrf_field": CSRF_FIELD, "csrf_token": token}
    )
    attach_csrf_cookie(request, response)
    return response


async def checked_form(
    request: web.Request, *, user: str, again: str
) -> MultiDictProxy[Any] | web.StreamResponse:
    """The posted form, or a 403 page saying AGAIN when its CSRF token is not this
    browser's for USER (stale, or sent from somewhere else)."""
    form = await request.post()
    if not csrf_ok(request, request.app[SIGNER], str(form.get(CSRF_FIELD, "")), user=user):
        return problem(request, 403, "Form expired", again)
    return form
