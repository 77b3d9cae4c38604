"""A1111's prompt styles and UI defaults files, as a running A1111 v1.10.1 treats them.

- ``--styles-file``: read at start into the styles database; the API only lists it
  (``GET /sdapi/v1/prompt-styles``, modules/api/api.py ``get_prompt_styles``); the
  Styles dialog's Save button adds a style and rewrites the file
  (modules/ui_prompt_styles.py ``save_style`` -> ``StyleDatabase.save_styles``), and
  its refresh button reads the file again (``shared.prompt_styles.reload``). Those two
  are Gradio functions in A1111; here they are ``POST /stub/ui/save-style`` and
  ``POST /stub/ui/refresh-styles``.
- ``--ui-config-file``: read when the UI is built (modules/ui_loadsave.py
  ``UiLoadsave``): at start and at Settings > Reload UI (``POST /stub/ui/reload``);
  Settings > Defaults > Apply writes it (``POST /stub/ui/save-ui-config``).
  ``GET /stub/ui/config`` shows what the UI was built with.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from aiohttp import web

FIELDS = ("name", "prompt", "negative_prompt")


class Styles:
    def __init__(self, styles_file: Path | None, ui_config_file: Path | None) -> None:
        self.styles_file = styles_file
        self.ui_config_file = ui_config_file
        self.styles: dict[str, dict[str, str]] = {}
        self.ui_config: dict[str, Any] = {}
        self.reload_styles()
        self.build_ui()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/sdapi/v1/prompt-styles", self.list_styles)
        app.router.add_post("/stub/ui/save-style", self.save_style)
        app.router.add_post("/stub/ui/refresh-styles", self.refresh_styles)
        app.router.add_post("/stub/ui/save-ui-config", self.save_ui_config)
        app.router.add_post("/stub/ui/reload", self.reload_ui)
        app.router.add_get("/stub/ui/config", self.shown_ui_config)

    def reload_styles(self) -> None:
        self.styles.clear()
        if self.styles_file is None or not self.styles_file.exists():
            return
        with open(self.styles_file, encoding="utf-8-sig", newline="") as file:
            for row in csv.DictReader(file, skipinitialspace=True):
                self.styles[row["name"]] = {k: row.get(k) or "" for k in FIELDS}

    def build_ui(self) -> None:
        self.ui_config = {}
        if self.ui_config_file is not None and self.ui_config_file.exists():
            self.ui_config = json.loads(self.ui_config_file.read_text(encoding="utf-8"))

    async def list_styles(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.styles.values()))

    async def save_style(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.styles[body["name"]] = {k: str(body.get(k) or "") for k in FIELDS}
        if self.styles_file is not None:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.styles.values())
            self.styles_file.write_text(text.getvalue(), encoding="utf-8-sig")
        return web.json_response(sorted(self.styles))

    async def refresh_styles(self, request: web.Request) -> web.Response:
        self.reload_styles()
        return web.json_response(sorted(self.styles))

    async def save_ui_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.ui_config_file is not None:
            self.ui_config_file.write_text(json.dumps(body, indent=4), encoding="utf-8")
        return web.json_response(None)

    async def reload_ui(self, request: web.Request) -> web.Response:
        self.build_ui()
        return web.json_response(None)

    async def shown_ui_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.ui_config)
