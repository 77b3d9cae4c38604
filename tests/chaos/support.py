"""Helpers of the fault tests: users as aiohttp clients, async waiting, the slow upstream."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}
SLOW_UPSTREAM = Path(__file__).with_name("slow_upstream.py")
MB = 1024 * 1024


def as_user(user: str, **extra: str) -> dict[str, str]:
    return {"X-Forwarded-User": user, **extra}


async def whoami(http: aiohttp.ClientSession, base: str, user: str) -> tuple[int, Any]:
    """(status, body): the pod's JSON on 200, else the text of the broker's page."""
    try:
        async with http.get(
            base + "/stub/whoami", headers=as_user(user), timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status == 200:
                return 200, await resp.json()
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, repr(exc)


async def until(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "", every: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(every)


async def pod_of(http: aiohttp.ClientSession, base: str, user: str, timeout: float = 30.0) -> str:
    async def ask() -> str | None:
        status, body = await whoami(http, base, user)
        return body["pod"] if status == 200 else None

    return await until(ask, timeout, what=f"{user}'s pod", every=0.2)


def slow_fleet(path: Path, outputs: Path, *, max: int = 4, buffer: int = 2) -> Path:
    """A fleet whose pods are tests/chaos/slow_upstream.py (a hanging or trickling WebUI)."""
    path.write_text(
        f"""backend: local
outputs: {outputs}
profiles:
  - name: default
    min: 0
    buffer: {buffer}
    max: {max}
    probe: http:/ready
    local:
      command: [{sys.executable}, {SLOW_UPSTREAM}, --port, "{{port}}", --pod-id, "{{pod}}"]
      stop_grace: 1s
"""
    )
    return path
