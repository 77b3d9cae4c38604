"""The agent keeps its user's WebUI settings (agent/keeping.py, agent/webui_settings.py):
restored into the stub WebUI once the claim is seen, saved into
``/outputs/<slug>/.webui-settings`` when they change, and once more at SIGTERM.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from fleet import parse_spec
from fleet.backends.kubepods import build_pod
from fleet.webui_settings import Store, styles_csv
from tests.agent.conftest import SLUG, Pod, Proc, clean_env, ready_is, stub_options, wait_until
from tests.agent.test_entrypoint import a1111_models, run_default

NOIR = {"name": "noir", "prompt": "film noir, {prompt}", "negative_prompt": "colour"}


def start(pod: Pod, interval: str) -> tuple[Proc, Proc, Path]:
    shared = pod.root / "webui-settings"  # the emptyDir both containers mount
    shared.mkdir()
    cmd = [*pod.stub_cmd(), "--styles-file", str(shared / "styles.csv"),
           "--ui-config-file", str(shared / "ui-config.json")]  # fmt: skip
    stub = pod._start(Proc("stub", cmd, clean_env(), pod.root))
    agent = pod.start_agent(SDB_AGENT_MODE="kubernetes", SDB_AGENT_WEBUI_SETTINGS=str(shared),
                            SDB_AGENT_SETTINGS_INTERVAL=interval)  # fmt: skip
    return stub, agent, pod.outputs / SLUG / ".webui-settings" / "a1111"


async def call(http: aiohttp.ClientSession, pod: Pod, path: str, body: Any = None) -> Any:
    method = "GET" if body is None and not path.startswith("/stub/ui/") else "POST"
    async with http.request(method, pod.webui_url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def kept_config(kept: Path) -> dict[str, Any]:
    try:
        return json.loads((kept / "config.json").read_text())
    except FileNotFoundError:
        return {}


async def test_restored_at_the_claim_and_saved_on_change(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    (pod.outputs / SLUG).mkdir()
    Store(str(pod.outputs), SLUG, "a1111").save(
        {"config.json": b'{"samples_format": "jpg"}', "styles.csv": styles_csv([NOIR])}
    )
    stub, agent, kept = start(pod, "300ms")
    await wait_until(lambda: ready_is(http, pod, 200), "agent ready", [stub, agent])
    assert (await stub_options(http, pod)).get("samples_format") != "jpg"  # not before the claim

    pod.claim()

    async def restored() -> bool:
        return (await stub_options(http, pod)).get("samples_format") == "jpg"

    await wait_until(restored, "options restored", [agent])
    assert await call(http, pod, "/stub/ui/refresh-styles") == ["noir"]

    await call(http, pod, "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 3})
    await call(http, pod, "/stub/ui/save-style", {"name": "sepia", "prompt": "sepia"})
    await wait_until(
        lambda: kept_config(kept).get("CLIP_stop_at_last_layers") == 3, "saved", [agent]
    )
    await wait_until(lambda: "sepia" in (kept / "styles.csv").read_text(), "style saved", [agent])
    assert not [k for k in kept_config(kept) if k.startswith("outdir_")]
    assert "restored 2 settings file(s)" in agent.output()


async def test_the_last_change_is_kept_at_sigterm(pod: Pod, http: aiohttp.ClientSession) -> None:
    stub, agent, kept = start(pod, "1h")  # no save on change within the test: SIGTERM's only
    await wait_until(lambda: ready_is(http, pod, 200), "agent ready", [stub, agent])
    pod.claim()
    await wait_until(lambda: "restored 0 settings" in agent.output(), "restore", [agent])
    await call(http, pod, "/sdapi/v1/options", {"samples_format": "webp"})
    await call(http, pod, "/stub/ui/save-ui-config", {"txt2img/Steps/value": 42})
    assert not kept.exists()
    agent.signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0
    assert kept_config(kept)["samples_format"] == "webp"
    assert json.loads((kept / "ui-config.json").read_text()) == {"txt2img/Steps/value": 42}


class ComfyStandIn:
    """ComfyUI's user-data API as comfyanonymous/ComfyUI serves it: app/app_settings.py
    (``GET /settings``; ``POST /settings`` merges into comfy.settings.json) and
    app/user_manager.py (``GET /userdata?dir=workflows``: relative names, 404 without the
    folder; ``GET/POST /userdata/{file}`` with the path %2F-encoded, overwrite by default)."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.files: dict[str, bytes] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/system_stats", lambda r: web.json_response({"devices": []}))
        app.router.add_get("/settings", lambda r: web.json_response(self.settings))
        app.router.add_post("/settings", self.post_settings)
        app.router.add_get("/userdata", self.listing)
        app.router.add_get("/userdata/{file}", self.get_file)
        app.router.add_post("/userdata/{file}", self.post_file)
        return app

    async def post_settings(self, request: web.Request) -> web.Response:
        self.settings.update(await request.json())
        return web.Response()

    async def listing(self, request: web.Request) -> web.Response:
        prefix = request.query["dir"] + "/"
        names = [k[len(prefix) :] for k in self.files if k.startswith(prefix)]
        return web.json_response(names) if names else web.Response(status=404)

    async def get_file(self, request: web.Request) -> web.Response:
        body = self.files.get(unquote(request.match_info["file"]))
        return web.Response(status=404) if body is None else web.Response(body=body)

    async def post_file(self, request: web.Request) -> web.Response:
        self.files[unquote(request.match_info["file"])] = await request.read()
        return web.json_response("ok")


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_comfyui_settings_and_workflows_follow_the_person(
    pod: Pod, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first = ComfyStandIn()
    runner = await serve(first.app(), pod.webui_port)
    comfy = {"SDB_AGENT_WEBUI": "comfyui", "SDB_AGENT_MODE": "kubernetes",
             "SDB_AGENT_SETTINGS_INTERVAL": "1h"}  # fmt: skip
    try:
        agent = pod.start_agent(SDB_AGENT_OUTPUTS_LINK=str(pod.root / "link"), **comfy)
        await wait_until(lambda: ready_is(http, pod, 200), "agent ready", [agent])
        pod.claim()
        await wait_until(lambda: "restored 0 settings" in agent.output(), "restore", [agent])
        first.settings["Comfy.ColorPalette"] = "light"
        first.files["workflows/portrait.json"] = b'{"nodes": [1, 2]}'
        agent.signal(signal.SIGTERM)  # reclaimed
        assert await agent.wait_exit() == 0
    finally:
        await runner.cleanup()

    # Her next pod: another ComfyUI, another agent, the same outputs volume.
    (tmp_path / "second").mkdir()
    second_pod = Pod(tmp_path / "second")
    second_pod.outputs = pod.outputs
    second = ComfyStandIn()
    runner = await serve(second.app(), second_pod.webui_port)
    try:
        agent = second_pod.start_agent(SDB_AGENT_OUTPUTS_LINK=str(tmp_path / "link2"), **comfy)
        await wait_until(lambda: ready_is(http, second_pod, 200), "ready", [agent])
        assert second.settings == {} and second.files == {}
        second_pod.claim()
        await wait_until(lambda: second.files, "workflow restored", [agent])
        assert second.settings == {"Comfy.ColorPalette": "light"}
        assert json.loads(second.files["workflows/portrait.json"]) == {"nodes": [1, 2]}
    finally:
        second_pod.stop_all()
        await runner.cleanup()


def test_a1111_pods_share_a_settings_folder_with_their_agent(tmp_path: Path) -> None:
    """The pod the kubernetes backend builds mounts one emptyDir in both containers and
    names it to both; the entrypoint then starts A1111 with its two files in it."""
    text = (
        "backend: kubernetes\nprofiles:\n  - name: a\n    max: 1\n"
        "    kubernetes: {image: sd:1, volumes: {outputs: {claim: sd-outputs}}}\n"
    )
    pod = build_pod(parse_spec(text).profiles[0], "p1")["spec"]
    shared = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    seen = {}
    for container in pod["containers"]:
        env = {e["name"]: e["value"] for e in container["env"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        folder = env["SDB_AGENT_WEBUI_SETTINGS"]
        assert mounts[folder] in shared and mounts[folder] != "handoff"
        seen[container["name"]] = mounts[folder]
    assert seen["webui"] == seen["agent"]

    done = run_default(a1111_models(tmp_path), SDB_PRINT_COMMAND="1",
                       SDB_AGENT_WEBUI_SETTINGS="/webui-settings")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("--styles-file /webui-settings/styles.csv --ui-config-file "
            "/webui-settings/ui-config.json") in done.stdout  # fmt: skip
