"""Each person's earlier images: ``/_broker/gallery``, served by the broker to them alone.

A WebUI runs its user's code, so it no longer mounts the shared outputs
volume (webui-image/README.md, the pod contract), and cannot show its user
the images of earlier sessions. The broker can: it reads the volume (its
Deployment mounts it read-only) at the folder its backend names for the
logged-in user, ``Backend.outputs_path(slugify(user))``, the same folder the
claim gives the user's pods. The folder comes from the identity alone, never
from the request; what the request names below it is walked without
following links (gallery_files). Every file call runs in a thread: the
volume is often NFS.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from fleet import slugify

from .admission import authenticate
from .appkeys import FLEET
from .gallery_files import RootMissing, image_type, list_images, read_image, valid_parts
from .identity import Identity
from .pages import problem

log = logging.getLogger(__name__)
GALLERY_PATH = "/_broker/gallery"
PAGE_SIZE = 48


def _folder(request: web.Request, identity: Identity) -> tuple[str, str]:
    """(root, slug) of the user's outputs folder, as the broker sees the volume."""
    root, slug = os.path.split(request.app[FLEET].backend.outputs_path(slugify(identity.user)))
    return root, slug


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < len(text) < 7 else 1


async def gallery_page(request: web.Request) -> web.StreamResponse:
    """GET: the user's images, newest first, PAGE_SIZE per page, each linking to its file."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    root, slug = _folder(request, identity)
    error = ""
    try:
        images, truncated = await asyncio.to_thread(list_images, root, slug)
    except RootMissing as exc:
        log.warning("gallery: %s; mount the outputs volume on the broker (read-only)", exc)
        images, truncated, error = [], False, "Your images cannot be read right now."
    except OSError as exc:
        log.warning("gallery of %s: cannot read %s/%s: %s", identity.user, root, slug, exc)
        images, truncated, error = [], False, "Your images cannot be read right now."
    pages = max(1, math.ceil(len(images) / PAGE_SIZE))
    page = min(_page_number(request.query.get("page", "1")), pages)
    shown = images[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    context = {
        "identity": identity,
        "images": [
            {
                "url": f"{GALLERY_PATH}/{quote(image.path)}",
                "name": image.path.rsplit("/", 1)[-1],
                "folder": image.path.rpartition("/")[0],
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(image.mtime)),
            }
            for image in shown
        ],
        "total": len(images),
        "page": page,
        "pages": pages,
        "truncated": truncated,
        "error": error,
    }
    return aiohttp_jinja2.render_template("gallery.html", request, context)


async def gallery_file(request: web.Request) -> web.StreamResponse:
    """GET: one image of the user's own folder; 404 for anything else, whatever it is."""
    identity = await authenticate(request)
    if not isinstance(identity, Identity):
        return identity
    parts = request.match_info["path"].split("/")
    kind = image_type(parts[-1])
    if not (kind and valid_parts(parts)):
        return _not_found(request)
    root, slug = _folder(request, identity)
    try:
        body, info = await asyncio.to_thread(read_image, root, slug, parts)
    except OSError:
        return _not_found(request)
    return web.Response(
        body=body,
        content_type=kind,
        headers={
            # The user's own, rarely changed: the browser may keep it a while, nobody else.
            "Cache-Control": "private, max-age=300",
            "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(info.st_mtime)),
            # A WebUI wrote these bytes: never let them run as a page.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def _not_found(request: web.Request) -> web.Response:
    return problem(request, 404, "Not found", "There is no image of yours at this address.")


def add_routes(app: web.Application) -> None:
    app.router.add_get(GALLERY_PATH, gallery_page)
    app.router.add_get(GALLERY_PATH + "/{path:.+}", gallery_file)
