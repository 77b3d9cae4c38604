"""A client for the Agones SDK sidecar's REST gateway (``localhost:$AGONES_SDK_HTTP_PORT``).

Paths and bodies follow agones.dev "REST Game Server Client API":
``POST /ready`` and ``POST /health`` with ``{}``, ``GET /gameserver``, and
``GET /watch/gameserver``, a stream of newline-delimited ``{"result": GameServer}``.
The sidecar may start after this container, so callers retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

log = logging.getLogger("sdb-agent")

# States in which POST /ready is the right call. Never from Allocated or
# Reserved: Ready on an Allocated GameServer hands it back to the pool, and a
# single-use pod with a user's session in it would be allocated to someone else.
BEFORE_READY = {"", "PortAllocation", "Creating", "Starting", "Scheduled", "RequestReady"}
MAX_LINE = 4 * 1024 * 1024  # one GameServer as JSON; generous for many labels


class SDKError(Exception):
    """The sidecar refused or is not reachable (yet)."""


class AgonesSDK:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self.session = session
        self.base = base_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _post(self, path: str) -> None:
        try:
            async with self.session.post(self.base + path, json={}, timeout=self.timeout) as r:
                if r.status != 200:
                    raise SDKError(f"POST {path} answered {r.status}: {(await r.text())[:200]}")
        except aiohttp.ClientError as exc:
            raise SDKError(f"POST {path}: {exc.__class__.__name__} {exc}") from exc

    async def ready(self) -> None:
        await self._post("/ready")

    async def health(self) -> None:
        await self._post("/health")

    async def gameserver(self) -> dict[str, Any]:
        try:
            async with self.session.get(self.base + "/gameserver", timeout=self.timeout) as r:
                if r.status != 200:
                    raise SDKError(f"GET /gameserver answered {r.status}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise SDKError(f"GET /gameserver: {exc.__class__.__name__} {exc}") from exc
        if not isinstance(body, dict):
            raise SDKError("GET /gameserver: not a JSON object")
        return body

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Yield each GameServer update until the stream ends (then the caller reconnects)."""
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout.total)
        try:
            async with self.session.get(
                self.base + "/watch/gameserver", timeout=no_total, read_bufsize=MAX_LINE
            ) as resp:
                if resp.status != 200:
                    raise SDKError(f"GET /watch/gameserver answered {resp.status}")
                while line := await resp.content.readline():
                    update = _decode(line)
                    if update is not None:
                        yield update
        except (aiohttp.ClientError, ValueError) as exc:
            raise SDKError(f"watch: {exc.__class__.__name__} {exc}") from exc


def _decode(line: bytes) -> dict[str, Any] | None:
    text = line.strip()
    if not text:
        return None
    message = json.loads(text)
    if not isinstance(message, dict):
        return None
    if "error" in message:
        log.warning("Agones watch reported an error: %s", str(message["error"])[:300])
        return None
    result = message.get("result")
    return result if isinstance(result, dict) else None
