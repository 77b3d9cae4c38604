"""A person's WebUI settings, kept in their folder and given to their next pod (issue 19, 4).

ONE implementation, this file and ``settings_store.py``, kept twice byte for byte:
in ``fleet/`` (the local backend: the broker saves and restores) and in
``webui-image/agent/`` (Kubernetes and Agones: the in-pod agent, the only one there
with the volume). The agent never imports sdbroker and fleet never imports the agent,
so both files are written for both (stdlib + aiohttp, Python 3.10, importing only
each other) and tests/test_webui_settings.py fails when a copy differs by one byte.

What is kept, under ``<user folder>/.webui-settings/<kind>/`` (a dot-folder: the
gallery never lists it, broker/gallery_files.py):

- a1111 ``config.json``: ``GET /sdapi/v1/options`` minus OWNED_OPTIONS, restored with
  ``POST /sdapi/v1/options`` (A1111 v1.10.1 modules/api/api.py ``get_config``,
  ``set_config``: ``shared.opts.set`` per key, then ``opts.save``).
- a1111 ``styles.csv``: ``GET /sdapi/v1/prompt-styles`` (api.py ``get_prompt_styles``),
  restored as the file ``--styles-file`` names; A1111 reads it at start and when the
  Styles refresh button is pressed (modules/ui_prompt_styles.py ``UiPromptStyles``:
  ``create_refresh_button(..., shared.prompt_styles.reload, ...)``), never through the API.
- a1111 ``ui-config.json``: no API has it, so the file ``--ui-config-file`` names is read
  (as hostile input) and restored; A1111 reads it only when it builds its UI
  (modules/ui_loadsave.py ``UiLoadsave.__init__``, from ``ui.create_ui``): at start and
  at Settings > Reload UI.
- comfyui ``comfy.settings.json``: ``GET/POST /settings`` (comfyanonymous/ComfyUI
  app/app_settings.py ``AppSettings.add_routes``; POST merges), and each
  ``workflows/<name>`` from ``GET /userdata?dir=workflows``, ``GET/POST /userdata/{file}``
  (app/user_manager.py ``UserManager.add_routes``).

The pod runs its user's code, so whatever it answers is validated (a JSON object, a
list of styles, a sane file name) and capped (FILE_MAX each, TOTAL_MAX and FILES_MAX
per kind; over a cap the last good copy is kept and a warning logged); files are
written atomically (a temporary name, then rename) through directory descriptors
that never follow a link, and only files the trusted side owns are read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from .settings_store import (
    A1111_FILES,
    COMFY_SETTINGS,
    FILE_MAX,
    FILES_MAX,
    FOLDER,
    KINDS,
    OWNED_OPTIONS,
    TOTAL_MAX,
    WORKFLOWS,
    SettingsError,
    Store,
    check,
    check_styles,
    digest,
    owned,
    parse_json,
    read_webui_file,
    safe_name,
    styles_csv,
    write_webui_file,
)

__all__ = [
    "A1111_FILES", "COMFY_SETTINGS", "FILE_MAX", "FILES_MAX", "FOLDER", "KINDS",
    "OWNED_OPTIONS", "TOTAL_MAX", "WORKFLOWS", "Keeper", "SettingsError", "Store",
    "WebUISettings", "check", "digest", "styles_csv",
]  # fmt: skip

log = logging.getLogger(__name__)


# ----- the WebUI's API -----


class WebUISettings:
    """Fetch and apply one kind's settings through a running WebUI.

    ``webui_dir``: the folder the WebUI's ``--styles-file`` and ``--ui-config-file`` name,
    as this side sees it (the local pod's ``{home}``; the agent's shared settings folder),
    or None: only what the API carries.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        kind: str,
        webui_dir: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.http, self.base, self.kind, self.webui_dir = (
            http,
            base_url.rstrip("/"),
            kind,
            webui_dir,
        )
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        #: True when the last fetch had every workflow the WebUI lists (the listing, each
        #: file read and valid, under FILES_MAX): only then may a deletion be mirrored.
        self.whole = False

    async def _get(self, path: str) -> bytes:
        async with self.http.get(self.base + path, timeout=self.timeout) as resp:
            resp.raise_for_status()
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > FILE_MAX:  # read no further: a pod may answer forever
                    raise SettingsError(f"{path}: answer over {FILE_MAX} bytes")
            return bytes(body)

    async def _post(self, path: str, data: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        async with self.http.post(
            self.base + path, data=data, headers=headers, timeout=self.timeout
        ) as resp:
            resp.raise_for_status()

    async def fetch(self) -> dict[str, bytes]:
        """Every setting of this kind now, validated; SettingsError or a client error when
        a part cannot be had (then nothing is saved this time: the last copy stays)."""
        self.whole = False
        if self.kind == "comfyui":
            return await self._fetch_comfy()
        files = {"config.json": check("config.json", await self._get("/sdapi/v1/options"))}
        answer = await self._get("/sdapi/v1/prompt-styles")
        files["styles.csv"] = styles_csv(check_styles(parse_json("prompt-styles", answer)))
        if self.webui_dir is not None:
            raw = await asyncio.to_thread(read_webui_file, self.webui_dir, "ui-config.json")
            if raw is not None:
                with contextlib.suppress(SettingsError):
                    files["ui-config.json"] = check("ui-config.json", raw)
        return files

    async def _fetch_comfy(self) -> dict[str, bytes]:
        files = {COMFY_SETTINGS: check(COMFY_SETTINGS, await self._get("/settings"))}
        try:
            names = parse_json("userdata listing", await self._get("/userdata?dir=workflows"))
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:  # no workflows folder yet (or a restore that failed)
                return files
            raise
        if not isinstance(names, list):
            raise SettingsError("userdata listing: not a list")
        whole = len(names) <= FILES_MAX
        for name in names[:FILES_MAX]:
            if not isinstance(name, str):
                whole = False
                continue
            try:
                safe_name(name)
            except SettingsError as exc:
                log.warning("ComfyUI workflow skipped: %s", exc)
                whole = False
                continue
            body = await self._get("/userdata/" + quote(WORKFLOWS + name, safe=""))
            try:
                files[WORKFLOWS + name] = check(WORKFLOWS + name, body)
            except SettingsError:
                whole = False
        self.whole = whole
        return files

    async def apply(self, files: dict[str, bytes]) -> None:
        """Give FILES to the WebUI: its API where it has one, else its own folder."""
        for name, data in files.items():
            if name == "config.json":
                await self._restore_options(parse_json(name, data))
            elif name in ("styles.csv", "ui-config.json") and self.webui_dir is not None:
                await asyncio.to_thread(write_webui_file, self.webui_dir, name, data)
            elif name == COMFY_SETTINGS:
                await self._post("/settings", data)
            elif name.startswith(WORKFLOWS):
                path = "/userdata/" + quote(name, safe="") + "?overwrite=true"
                await self._post(path, data)

    async def _restore_options(self, kept: dict[str, Any]) -> None:
        """Only the options this WebUI has, and only those that differ: an option of an
        extension the next pod lacks is not one to set, and each change may run A1111's
        onchange callback for it (v1.10.1 modules/options.py ``Options.set``)."""
        now = parse_json("options", await self._get("/sdapi/v1/options"))
        if not isinstance(now, dict):
            raise SettingsError("options: not a JSON object")
        wanted = {k: v for k, v in kept.items() if k in now and now[k] != v and not owned(k)}
        if wanted:
            await self._post("/sdapi/v1/options", json.dumps(wanted).encode())


class Keeper:
    """One claimed pod's settings: restored once, then saved whenever they change."""

    def __init__(self, webui: WebUISettings, store: Store) -> None:
        self.webui, self.store = webui, store
        self.last = ""  # digest of what was last kept or restored
        #: Every kept file was given to the pod: until then, a workflow missing from the
        #: pod may be one it never got, so no deletion is mirrored.
        self.restored = False

    async def restore(self) -> int:
        files = await asyncio.to_thread(self.store.load)
        await self.webui.apply(files)
        self.restored = True
        if files:  # what the pod holds now, as fetched: nothing to save until it changes
            with contextlib.suppress(SettingsError, aiohttp.ClientError, asyncio.TimeoutError):
                now = await self.webui.fetch()
                self.last = digest(now) + ("+" if self.webui.whole else "")
        return len(files)

    async def save(self) -> int:
        """Fetch, and keep what changed since the last look (a digest compare: cheap); a
        complete fetch after a complete restore also removes the workflows deleted there."""
        files = await self.webui.fetch()
        mirror = self.restored and self.webui.whole
        now = digest(files) + ("+" if mirror else "")
        if now == self.last:
            return 0
        changed = await asyncio.to_thread(self.store.save, files, mirror)
        self.last = now
        return changed
