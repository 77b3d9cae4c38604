"""The two things the agent asks of a WebUI: is it ready, and save into this folder.

``A1111`` also serves Forge, which keeps A1111's API. ``ComfyUI`` has no
options API and fixes its output directory at start (``--output-directory``),
so that flag points at a symlink the agent owns, and a claim re-points the
symlink: the model stays warm and nothing restarts (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

# Every A1111 setting that names a folder images are written to. outdir_samples
# and outdir_grids must be empty: when set they override the per-mode folders.
A1111_OUTDIRS = {
    "outdir_samples": "",
    "outdir_grids": "",
    "outdir_txt2img_samples": "txt2img-images",
    "outdir_img2img_samples": "img2img-images",
    "outdir_extras_samples": "extras-images",
    "outdir_txt2img_grids": "txt2img-grids",
    "outdir_img2img_grids": "img2img-grids",
    "outdir_save": "saved",
    "outdir_init_images": "init-images",
}
REQUEST_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)


@dataclass(frozen=True)
class Check:
    ready: bool
    reason: str
    answered: bool  # the WebUI answered HTTP at all (alive, perhaps still loading)


class WebUI(Protocol):
    async def prepare(self) -> None:
        """Set up what must exist before the WebUI starts writing (may raise OSError)."""

    async def check(self) -> Check: ...

    async def point_outputs(self, folder: Path) -> bool:
        """Make the WebUI save into ``folder``; True if something had to change."""


def a1111_outdirs(folder: Path) -> dict[str, str]:
    return {key: str(folder / sub) if sub else "" for key, sub in A1111_OUTDIRS.items()}


class A1111:
    """AUTOMATIC1111 or Forge, through ``/internal/ping`` and ``/sdapi/v1/*``.

    Ready means all three answer and the loaded checkpoint is one of the
    listed models: A1111 serves HTTP well before the checkpoint is in memory,
    and a pod handed out then would make its user wait for the load.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self.session = session
        self.base = base_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.options: dict[str, Any] = {}

    async def prepare(self) -> None:
        return None

    async def _get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, timeout=self.timeout) as resp:
            if resp.status != 200:
                return resp.status, None
            return resp.status, await resp.json(content_type=None)

    async def check(self) -> Check:
        try:
            status, _ = await self._get("/internal/ping")
            if status != 200:
                return Check(False, f"/internal/ping answered {status} (starting)", True)
            status, models = await self._get("/sdapi/v1/sd-models")
            if status != 200 or not isinstance(models, list):
                return Check(False, f"/sdapi/v1/sd-models answered {status}", True)
            if not models:
                return Check(False, "no checkpoints found: check the models volume", True)
            status, options = await self._get("/sdapi/v1/options")
            if status != 200 or not isinstance(options, dict):
                return Check(False, f"/sdapi/v1/options answered {status}", True)
        except REQUEST_ERRORS as exc:
            return Check(False, f"WebUI not answering: {exc.__class__.__name__} {exc}", False)
        self.options = options
        loaded = options.get("sd_model_checkpoint")
        names = {m.get("title") for m in models} | {m.get("model_name") for m in models}
        if not loaded or loaded not in names:
            return Check(False, f"model not loaded yet (sd_model_checkpoint={loaded!r})", True)
        return Check(True, f"model {loaded} loaded", True)

    async def point_outputs(self, folder: Path) -> bool:
        """POST only the outdirs that differ from the last options read, so a
        WebUI that restarted (or a user who edited the setting) is put back."""
        wanted = a1111_outdirs(folder)
        drift = {k: v for k, v in wanted.items() if self.options.get(k) != v}
        if not drift:
            return False
        async with self.session.post(
            self.base + "/sdapi/v1/options", json=drift, timeout=self.timeout
        ) as resp:
            if resp.status != 200:
                body = (await resp.text())[:200]
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=body
                )
        self.options.update(drift)
        return True


class ComfyUI:
    """ComfyUI started with ``--output-directory <link>``; readiness is ``/system_stats``.

    ComfyUI loads checkpoints on the first prompt, so answering HTTP is all
    there is to wait for. Before a claim the link points at the pod-local
    holding folder, so nothing lands on the shared volume unowned. ``link``
    None: the split layout, where ComfyUI saves into the handoff folder for
    good (``--output-directory /outputs``) and the agent moves what it saves.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout: float,
        link: Path | None,
        holding: Path,
    ) -> None:
        self.session = session
        self.base = base_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.link = link
        self.holding = holding

    async def prepare(self) -> None:
        """The entrypoint makes the link before ComfyUI starts; this repairs a run without it."""
        if self.link is None:
            return
        self.holding.mkdir(parents=True, exist_ok=True)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        if self.link.is_dir() and not self.link.is_symlink():
            self.link.rmdir()  # ComfyUI made it first; an empty one is ours to replace
        if not self.link.is_symlink():
            self._swap(self.holding)

    async def check(self) -> Check:
        try:
            async with self.session.get(self.base + "/system_stats", timeout=self.timeout) as r:
                if r.status == 200:
                    return Check(True, "ComfyUI answering", True)
                return Check(False, f"/system_stats answered {r.status}", True)
        except REQUEST_ERRORS as exc:
            return Check(False, f"WebUI not answering: {exc.__class__.__name__} {exc}", False)

    async def point_outputs(self, folder: Path) -> bool:
        if self.link is None:
            return False
        if self.link.is_symlink() and Path(os.readlink(self.link)) == folder:
            return False
        self._swap(folder)
        return True

    def _swap(self, target: Path) -> None:
        """Atomic: a new symlink renamed over the old, so no save sees it missing."""
        assert self.link is not None
        tmp = self.link.with_name(f".{self.link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, self.link)
