"""Helpers of the waiting-room and admin suites: fleet files, people with cookies, SSE, tokens."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.procs import STUB

FLEET = """\
backend: local
idle_timeout: {idle}
timezone: {tz}
outputs: {outputs}
profiles:
{profiles}"""

PROFILE = """\
  - name: {name}
    display_name: {display}
    gpu: {gpu}
    min: {min}
    buffer: {buffer}
    max: {max}
    probe: a1111
{schedule}    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "{delay}"]
      stop_grace: 2s
"""


def fleet_file(
    path: Path,
    outputs: Path,
    *profiles: dict[str, Any],
    idle: str = "15m",
    tz: str = "UTC",
) -> Path:
    """A local fleet of stub WebUIs; each profile dict may set name, gpu, min, buffer, max, delay."""
    blocks = []
    for p in profiles or ({},):
        name = p.get("name", "default")
        schedule = "".join(f"      - {json.dumps(entry)}\n" for entry in p.get("schedule", []))
        blocks.append(
            PROFILE.format(
                name=name,
                display=json.dumps(p.get("display", name.upper())),
                gpu=json.dumps(p.get("gpu", "CPU stand-in")),
                min=p.get("min", 0),
                buffer=p.get("buffer", 1),
                max=p.get("max", 2),
                schedule=f"    schedule:\n{schedule}" if schedule else "",
                stub=STUB,
                delay=p.get("delay", 0.3),
            )
        )
    path.write_text(FLEET.format(idle=idle, tz=tz, outputs=outputs, profiles="".join(blocks)))
    return path


def field(page: str, name: str) -> str:
    """The value of the (first) hidden input called `name`."""
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page)
    assert found, f"no field {name} in page"
    return html.unescape(found[1])


def element(page: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>([^<]*)<', page)
    assert found, f"no #{element_id} in page"
    return html.unescape(found[1]).strip()


async def eventually(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.1)


class Person:
    """One browser-like client: a cookie jar, and either a dev login or a trusted header."""

    def __init__(self, base: str, *, header_user: str | None = None) -> None:
        self.base = base
        self.headers = {"X-Forwarded-User": header_user} if header_user else {}
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers=self.headers
        )

    async def close(self) -> None:
        await self.http.close()

    async def page(self, path: str, **kw: Any) -> tuple[int, str, str]:
        """GET as a browser navigating: (status, final URL path, body)."""
        headers = {"Accept": "text/html", **kw.pop("headers", {})}
        async with self.http.get(self.base + path, headers=headers, **kw) as resp:
            return resp.status, resp.url.path, await resp.text()

    async def post_form(
        self, path: str, data: dict[str, str] | list[tuple[str, str]], **kw: Any
    ) -> tuple[int, str, str]:
        headers = {"Accept": "text/html", **kw.pop("headers", {})}
        async with self.http.post(self.base + path, data=data, headers=headers, **kw) as resp:
            return resp.status, resp.url.path, await resp.text()

    async def login(self, name: str) -> None:
        _, _, page = await self.page("/_broker/login")
        status, _, _ = await self.post_form(
            "/_broker/login",
            {"csrf_token": field(page, "csrf_token"), "user": name, "next": "/_broker/healthz"},
        )
        assert status == 200, status

    async def whoami(self) -> dict[str, Any] | None:
        async with self.http.get(self.base + "/stub/whoami") as resp:
            return await resp.json() if resp.status == 200 else None

    async def admin_token(
        self, name: str = "tests", scope: str = "admin", *, scopes: tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """Create an API token through the console form: (token, id). `scopes`: tick these
        boxes (the console's form); else send the older `scope` choice."""
        _, _, console = await self.page("/_broker/admin")
        form: list[tuple[str, str]] = [("csrf_token", field(console, "csrf_token")), ("name", name)]
        form += [("scopes", s) for s in scopes] if scopes else [("scope", scope)]
        status, _, page = await self.post_form("/_broker/admin/tokens", form)
        assert status == 200, page
        return element(page, "new-token"), element(page, "new-token-id")


async def read_events(
    http: aiohttp.ClientSession, url: str, *, headers: dict[str, str] | None = None,
    until: str = "ready", timeout: float = 30.0,
) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Read a server-sent event stream until an event called `until`; every event seen."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with http.get(
        url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event = "message"
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((event, json.loads(line.removeprefix("data: "))))
                if event == until:
                    return seen
    return seen


class Api:
    """The admin JSON API with a bearer token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base + "/_broker/api/v1"
        self.token = token

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def send_text(self, method: str, path: str, text: str) -> tuple[int, Any]:
        """A raw body (PUT /spec takes the YAML itself)."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/yaml"}
        async with self.http.request(
            method, self.base + path, data=text.encode(), headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)
