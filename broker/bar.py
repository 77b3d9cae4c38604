"""The bar in the WebUI's own page: its script and the little it shows.

broker/proxy/overlay.py puts one tag, `<script src="/_broker/overlay.js?v=...">`,
into a page load of a profile with `overlay: true`. The script is the same for
everyone and names its version, so it is cached for good; its figures come
from `/_broker/overlay.json` (same identity and allow lists as every request,
never cached), the home page's status plus who is logged in. Neither carries a
secret: the WebUI's own scripts share the page and may read all of it.
"""

from __future__ import annotations

from aiohttp import web

from .home import status_json
from .proxy import OVERLAY_SCRIPT, OVERLAY_SCRIPT_PATH, OVERLAY_VERSION

DATA_PATH = "/_broker/overlay.json"


async def script(request: web.Request) -> web.StreamResponse:
    """GET /_broker/overlay.js: cached for a year when asked by its version, else revalidated."""
    cache = (
        "public, max-age=31536000, immutable"
        if request.query.get("v") == OVERLAY_VERSION
        else "no-cache"
    )
    return web.Response(
        body=OVERLAY_SCRIPT,
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": cache, "ETag": f'"{OVERLAY_VERSION}"'},
    )


async def data(request: web.Request) -> web.StreamResponse:
    """GET /_broker/overlay.json: who is logged in and their WebUI's clock (seconds): the
    home page's /_broker/status, with the user and the home page's address."""
    return await status_json(request, who=True)


def add_routes(app: web.Application) -> None:
    app.router.add_get(OVERLAY_SCRIPT_PATH, script)
    app.router.add_get(DATA_PATH, data)
