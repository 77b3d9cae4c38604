"""How we ask a WebUI whether it is up, busy, and where it should write.

One small class per WebUI kind (`probe:` in fleet.yaml): a1111 (also Forge),
comfyui, or http:<path> for anything else that only has a health URL. Each kind
is registered once, at the bottom of this module, with its default activity
rules and the check of its `probe:` value: the spec, the reaper, the controller
and the activity classifier all read this registry, so a new kind is one
`register_kind` call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)
#: The longest answer a probe reads. Real ones are a few hundred bytes; a WebUI runs
#: its user's code, which could answer a gigabyte to every busy probe (each admin
#: console load, each reap cycle) and grow the broker by as much.
ANSWER_MAX = 64 * 1024


class Probe:
    """Readiness by an HTTP GET answering 2xx; no busy signal, no outputs API."""

    def __init__(self, ready_path: str) -> None:
        self.ready_path = ready_path

    async def ready(self, http: aiohttp.ClientSession, addr: str) -> bool:
        return (await self.check(http, addr))[0]

    async def check(self, http: aiohttp.ClientSession, addr: str) -> tuple[bool, str]:
        """(ready, what the probe saw): "HTTP 404 from /internal/ping", "connection
        refused"... for the never-ready message (it said "no answer" to a pod answering 404)."""
        try:
            async with http.get(addr + self.ready_path, timeout=PROBE_TIMEOUT) as resp:
                return resp.status < 300, f"HTTP {resp.status} from {self.ready_path}"
        except TimeoutError:
            return False, f"no answer from {self.ready_path} within {PROBE_TIMEOUT.total:.0f}s"
        except aiohttp.ClientConnectorError as exc:
            return False, f"connection to {self.ready_path} failed ({exc.os_error.strerror or exc})"
        except aiohttp.ClientError as exc:
            return False, f"{self.ready_path}: {type(exc).__name__}"

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        """True while the WebUI works on something. Raises on timeout or connection error."""
        return False

    async def set_outputs(self, http: aiohttp.ClientSession, addr: str, path: str) -> None:
        """Point the WebUI's outputs at the user's folder, where the WebUI has an API for it."""

    async def _json(self, http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
        """The answer's JSON; an answer over ANSWER_MAX is no answer (ClientPayloadError)."""
        async with http.request(method, url, timeout=PROBE_TIMEOUT, **kw) as resp:
            resp.raise_for_status()
            too_big = aiohttp.ClientPayloadError(f"{url}: answer over {ANSWER_MAX} bytes")
            if (resp.content_length or 0) > ANSWER_MAX:
                raise too_big
            body = bytearray()
            async for chunk in resp.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > ANSWER_MAX:
                    raise too_big
            return json.loads(body) if body else None


class A1111Probe(Probe):
    def __init__(self) -> None:
        super().__init__("/internal/ping")

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        progress = await self._json(
            http, "GET", addr + "/sdapi/v1/progress?skip_current_image=true"
        )
        if (progress.get("state") or {}).get("job_count", 0) != 0:
            return True
        try:
            pending = await self._json(http, "GET", addr + "/internal/pending-tasks")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:  # older WebUIs have no pending-tasks endpoint
                return False
            raise
        return int(pending.get("size", 0)) > 0

    async def set_outputs(self, http: aiohttp.ClientSession, addr: str, path: str) -> None:
        await self._json(
            http,
            "POST",
            addr + "/sdapi/v1/options",
            json={
                "outdir_txt2img_samples": f"{path}/txt2img-images",
                "outdir_img2img_samples": f"{path}/img2img-images",
                "outdir_extras_samples": f"{path}/extras-images",
                "outdir_txt2img_grids": f"{path}/txt2img-grids",
                "outdir_img2img_grids": f"{path}/img2img-grids",
            },
        )


class ComfyUIProbe(Probe):
    def __init__(self) -> None:
        super().__init__("/system_stats")

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        data = await self._json(http, "GET", addr + "/prompt")
        return int((data.get("exec_info") or {}).get("queue_remaining", 0)) > 0


@dataclass(frozen=True, slots=True)
class WebUIKind:
    """One `probe:` kind: how to build its probe, its default activity rules, its spelling.

    `argument` names what follows `name:` (like http:/healthz); None: the kind is
    written bare. `check` vets that argument and raises ValueError with what the
    admin will read. `ignore`/`count` are the built-in activity rules (see
    fleet.activity_rules): ignore wins over count.
    """

    name: str
    build: Callable[[str], Probe]  # gets the argument ("" for a bare kind)
    ignore: tuple[str, ...] = ()
    count: tuple[str, ...] = ()
    argument: str | None = None  # how the admin's message writes it, like "/some/path"
    check: Callable[[str], None] | None = None

    @property
    def spelling(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"


_KINDS: dict[str, WebUIKind] = {}
#: The kind assumed for a pod whose profile a reload removed: most WebUIs speak a1111.
FALLBACK_KIND = "a1111"


def register_kind(kind: WebUIKind) -> WebUIKind:
    """Add a kind (or replace one of the same name); returns it for unregister_kind."""
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    _KINDS.pop(name, None)


def kind_of(value: str) -> WebUIKind:
    """The registered kind of a `probe:` value, its argument checked; ValueError says why not."""
    name, colon, arg = value.partition(":")
    kind = _KINDS.get(name)
    if kind is not None and bool(colon) == (kind.argument is not None):
        if kind.check is not None:
            kind.check(arg)
        return kind
    *first, last = [k.spelling for k in _KINDS.values()]
    known = f"{', '.join(first)} or {last}" if first else last
    raise ValueError(f"must be {known}, got '{value}'")


def make_probe(kind: str) -> Probe:
    """The probe of a `probe:` value (ValueError for an unknown or malformed one)."""
    found = kind_of(kind)
    return found.build(kind.partition(":")[2])


def _http_path(path: str) -> None:
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"http probe path must start with / (like http:/healthz), got '{path}'")


register_kind(
    WebUIKind(
        "a1111",  # AUTOMATIC1111 and Forge (Gradio 3 and 4)
        lambda _: A1111Probe(),
        ignore=(
            "/internal/progress",  # the page polls this every second while a job runs
            "/internal/ping",
            "/heartbeat/*",  # Gradio 4 session heartbeat (Forge), sent by an idle tab
            "GET /queue/data",  # Gradio 4 SSE result stream, reopened by the page
            "GET /sdapi/v1/progress",  # progress polling by scripts and extensions
            "GET /file=*",  # gallery images and thumbnails an idle page refreshes
            "GET /assets/*",
            "GET /static/*",
            "GET /javascript/*",
            "GET /sd_extra_networks/*",
            "GET /favicon.ico",
        ),
        count=(
            "POST /*",  # generations, uploads (/upload), every button (/run/predict, /queue/join)
            "/sdapi/*",  # the API: a script at work is a user at work
            "GET /",  # the page itself
        ),
    )
)
register_kind(
    WebUIKind(
        "comfyui",
        lambda _: ComfyUIProbe(),
        ignore=(
            "GET /prompt",  # queue status polling
            "GET /api/prompt",
            "GET /ws",  # the status socket's handshake; the server's messages never count
            "GET /api/ws",
        ),
        count=("POST /prompt", "POST /api/prompt", "POST /upload/*", "POST /api/upload/*", "GET /"),
    )
)
register_kind(
    WebUIKind(
        "http",  # anything else: whatever changes state is a person
        Probe,
        count=("POST /*", "PUT /*", "PATCH /*", "DELETE /*", "GET /"),
        argument="/some/path",
        check=_http_path,
    )
)
