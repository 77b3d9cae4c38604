"""ComfyUI mode: no options API, so a claim re-points the symlink ComfyUI writes through.

A tiny in-test ComfyUI (``/system_stats`` only) stands in for the real one;
what is checked is the filesystem: where the link points before and after
the claim, and that a file written through it lands in the user's folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.agent.conftest import SLUG, Pod, get_json, wait_until


@pytest.fixture
async def comfy(pod: Pod) -> AsyncIterator[None]:
    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "stand-in"}, "devices": []})

    app = web.Application()
    app.router.add_get("/system_stats", system_stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pod.webui_port).start()
    yield
    await runner.cleanup()


async def test_claim_repoints_the_output_link(
    pod: Pod, http: aiohttp.ClientSession, comfy: None
) -> None:
    link = pod.root / "run" / "outputs"
    agent = pod.start_agent(SDB_AGENT_WEBUI="comfyui", SDB_AGENT_OUTPUTS_LINK=str(link))

    async def ready() -> bool:
        status, _ = await get_json(http, f"{pod.agent_url}/ready")
        return status == 200

    await wait_until(ready, "ready on /system_stats", [agent])
    assert link.is_symlink() and Path(os.readlink(link)) == pod.holding
    early = link / "ComfyUI_00001_.png"  # saved before the label reached the pod
    early.write_bytes(b"early")
    os.utime(early, (time.time() - 5, time.time() - 5))  # settled: safe to move

    pod.claim()
    folder = pod.outputs / SLUG
    await wait_until(lambda: link.is_symlink() and link.resolve() == folder, "relink", [agent])
    (link / "ComfyUI_00002_.png").write_bytes(b"late")
    names = ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    await wait_until(lambda: sorted(p.name for p in folder.iterdir()) == names, "both", [agent])
    assert (folder / "ComfyUI_00001_.png").read_bytes() == b"early"
    assert list(pod.holding.iterdir()) == []
