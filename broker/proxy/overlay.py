"""The broker's bar in the WebUI's own page: one <script> tag before </body>.

Only a page navigation of a profile with `overlay: true` is touched (the gateway
decides, `is_page_navigation`), and of its answers only a 200 text/html page that
is not a download, in an ASCII-compatible charset, no bigger than SDB_OVERLAY_MAX_PAGE
(8 MiB unless set), while fewer than MAX_PAGES_AT_ONCE pages are held. Every other
answer, and such a page over the cap, goes on as the pod sent it, through the same
streaming relay as the rest (forward.relay_answer).

The pod is asked for identity encoding on navigations only (`ask_for_page`), so
no other request changes. A1111 compresses through Starlette's GZipMiddleware
(stable-diffusion-webui 1.x modules/initialize_util.py, setup_middleware:
`GZipMiddleware, minimum_size=1000`), which compresses only when the request's
Accept-Encoding names gzip (starlette/middleware/gzip.py, GZipMiddleware.__call__),
so the page comes plain; a pod that compresses anyway with gzip or deflate is
decoded here (bounded by the cap), and one with another coding passes untouched.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .forward import Answer, PodBadAnswer, PodTimeout, relay_answer
from .headers import downstream_headers

#: Pages above this (as sent, and once decoded) pass untouched: the broker holds a page
#: whole while it rewrites it. A1111's page carries its whole Gradio config inline,
#: a few hundred KiB to a few MiB with many extensions. The default of
#: SDB_OVERLAY_MAX_PAGE (broker/settings.py), which the gateway passes as `max_page`.
MAX_PAGE = 8 * 1024 * 1024
#: Pages one broker process holds at once; past it a page passes untouched, so a person
#: who loads many big pages together costs the broker at most this many times MAX_PAGE.
MAX_PAGES_AT_ONCE = 8
_held = 0
SCRIPT_FILE = Path(__file__).resolve().parent.parent / "static" / "overlay.js"
SCRIPT_PATH = "/_broker/overlay.js"
#: The script's text and its version (a hash of it): the tag names the version, so
#: the script is cached for good and a new release is fetched at once.
SCRIPT = SCRIPT_FILE.read_bytes()
VERSION = hashlib.sha256(SCRIPT).hexdigest()[:12]
TAG = f'<script src="{SCRIPT_PATH}?v={VERSION}" defer></script>'.encode()

#: A conditional or partial request could get a 304/206 of a page the browser holds
#: without the tag; a navigation of an overlay profile always asks for the whole page.
_NOT_FOR_PAGES = ("Accept-Encoding", "If-None-Match", "If-Modified-Since", "Range", "If-Range")
#: What described the pod's bytes, not the rewritten ones.
_OF_THE_POD_BYTES = ("Content-Length", "Content-Encoding", "ETag", "Last-Modified", "Content-MD5")
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def is_page_navigation(request: web.Request) -> bool:
    """A top-level page load: GET asking for HTML, and, where the browser says
    (Sec-Fetch-Dest, Fetch standard), for a document (not an iframe, not a fetch)."""
    if request.method != "GET" or "text/html" not in request.headers.get("Accept", ""):
        return False
    return request.headers.get("Sec-Fetch-Dest", "document") == "document"


def ask_for_page(headers: CIMultiDict[str]) -> None:
    """The request to the pod asks for the whole page, uncompressed."""
    for name in _NOT_FOR_PAGES:
        headers.popall(name, None)
    headers["Accept-Encoding"] = "identity"


def _rewritable(upstream: Answer) -> bool:
    headers = upstream.headers
    kind = headers.get("Content-Type", "").lower()
    coding = headers.get("Content-Encoding", "identity").strip().lower()
    return (
        upstream.status == 200
        and kind.startswith("text/html")
        and "utf-16" not in kind
        and "utf-32" not in kind
        and "attachment" not in headers.get("Content-Disposition", "").lower()
        and (coding == "identity" or coding in _DECODERS)
    )


def insert_tag(page: bytes) -> bytes:
    """The page with TAG before its last </body>, or at its end when it has none."""
    start = max(0, len(page) - 64 * 1024)  # it is near the end: a copy of the tail only
    at = page[start:].lower().rfind(b"</body")
    if at >= 0:
        at += start
    elif start:
        at = page.lower().rfind(b"</body")
    return page + TAG if at < 0 else page[:at] + TAG + page[at:]


def _decoded(body: bytes, coding: str, max_page: int) -> bytes | None:
    """The body decoded, or None when it is broken or decodes to more than MAX_PAGE."""
    if coding == "identity":
        return body
    decoder = zlib.decompressobj(_DECODERS[coding])
    try:
        page = decoder.decompress(body, max_page + 1)
    except zlib.error:
        return None
    return None if len(page) > max_page or decoder.unconsumed_tail else page


async def _read_up_to(upstream: Answer, limit: int) -> tuple[bytes, bool]:
    """Up to LIMIT bytes of the body and whether that was all of it (the rest stays
    in the stream)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await upstream.content.readany()
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


async def relay_page(
    request: web.Request, upstream: Answer, max_page: int = MAX_PAGE
) -> web.StreamResponse:
    """The pod's answer to a page navigation: the page with the tag, when it is one
    that may be rewritten; anything else exactly as relay_answer sends it."""
    global _held
    length = upstream.content_length
    too_big = length is not None and length > max_page
    if too_big or _held >= MAX_PAGES_AT_ONCE or not _rewritable(upstream):
        return await relay_answer(request, upstream)
    _held += 1
    try:
        return await _rewrite(request, upstream, max_page)
    finally:
        _held -= 1


async def _rewrite(request: web.Request, upstream: Answer, max_page: int) -> web.StreamResponse:
    try:
        body, whole = await _read_up_to(upstream, max_page)
    except TimeoutError as exc:
        upstream.release()
        raise PodTimeout(str(exc)) from exc
    except aiohttp.ClientError as exc:
        upstream.release()
        raise PodBadAnswer(f"the page broke off: {exc!r}"[:300]) from exc
    if not whole:  # over the cap: what was read goes first, the rest streams after it
        return await relay_answer(request, upstream, prefix=body)
    upstream.release()
    coding = upstream.headers.get("Content-Encoding", "identity").strip().lower()
    page = _decoded(body, coding, max_page)
    headers = downstream_headers(upstream.headers)
    if page is None:  # too big once decoded, or not what it claims: as it came
        headers.popall("Content-Length", None)
        return web.Response(status=200, reason=upstream.reason, headers=headers, body=body)
    for name in _OF_THE_POD_BYTES:
        headers.popall(name, None)
    return web.Response(status=200, reason=upstream.reason, headers=headers, body=insert_tag(page))
