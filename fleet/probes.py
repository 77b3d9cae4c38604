"""How we ask a WebUI whether it is up, busy, and where it should write.

One small class per WebUI kind (`probe:` in fleet.yaml): a1111 (also Forge),
comfyui, or http:<path> for anything else that only has a health URL.
"""

from __future__ import annotations

import json
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


def make_probe(kind: str) -> Probe:
    if kind == "a1111":
        return A1111Probe()
    if kind == "comfyui":
        return ComfyUIProbe()
    if kind.startswith("http:"):
        return Probe(kind.removeprefix("http:"))
    raise ValueError(f"unknown probe kind {kind!r}")
