"""The agent in a plain Kubernetes pod: readiness on :7861/ready, the claim from Downward API files.

Everything is real except the kubelet: the stub WebUI and the agent are
processes, the labels file is swapped the way the kubelet swaps it, and what
the agent did is read back from the stub's own options API.
"""

from __future__ import annotations

import base64
import json
import signal

import aiohttp

from tests.agent.conftest import (
    IDENTITY,
    SLUG,
    Pod,
    get_json,
    pointed,
    points_at,
    ready_status,
    stub_options,
    wait_until,
)


async def test_not_ready_while_the_webui_starts_then_ready(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub(startup_delay=1.5)
    agent = pod.start_agent(SDB_AGENT_MODE="kubernetes")

    async def loading() -> dict | None:
        status, body = await get_json(http, f"{pod.agent_url}/ready")
        return body if status == 503 and "answered 503" in body["reason"] else None

    body = await wait_until(loading, "a 503 from /ready while the stub loads", [stub, agent])
    assert body == {"ready": False, "reason": "/internal/ping answered 503 (starting)"}
    healthz, _ = await get_json(http, f"{pod.agent_url}/healthz")
    assert healthz == 200  # loading a model is alive, not broken: no liveness restart

    await wait_until(lambda: ready_status(http, pod), "an answer", [agent])
    await wait_until(lambda: _is(ready_status(http, pod), 200), "/ready 200", [stub, agent])
    status, body = await get_json(http, f"{pod.agent_url}/ready")
    assert (status, body) == (
        200,
        {"ready": True, "reason": "model stub-v1-5-cpu.safetensors [5tub5tub] loaded"},
    )
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert state["mode"] == "kubernetes" and state["user"] is None and state["outputs"] is None


async def test_claim_points_the_webui_at_the_users_folder(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()  # auto mode: finds the Downward API files
    await wait_until(lambda: _is(ready_status(http, pod), 200), "agent ready", [stub, agent])
    folder = pod.outputs / SLUG
    assert not points_at(await stub_options(http, pod), folder)

    pod.claim()
    options = await wait_until(lambda: pointed(http, pod, folder), "outputs applied", [agent])
    assert folder.is_dir()
    assert options["outdir_img2img_samples"] == str(folder / "img2img-images")
    assert options["outdir_samples"] == ""  # it would override the per-mode folders

    # The proof that matters: an image generated now lands in the user's folder.
    payload = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 1, "seed": 7}
    async with http.post(f"{pod.webui_url}/sdapi/v1/txt2img", json=payload) as resp:
        assert resp.status == 200
        result = await resp.json()
    (saved,) = json.loads(result["info"])["saved_paths"]
    assert saved.startswith(str(folder / "txt2img-images") + "/")
    assert base64.b64decode(result["images"][0])[:8] == b"\x89PNG\r\n\x1a\n"

    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert (state["user"], state["outputs"], state["ready"]) == (SLUG, str(folder), True)
    assert f"claimed by {IDENTITY} (folder {SLUG})" in agent.output()


async def test_a_restarted_webui_is_pointed_at_the_folder_again(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()
    pod.claim()
    folder = pod.outputs / SLUG
    await wait_until(lambda: pointed(http, pod, folder), "outputs applied", [stub, agent])

    stub.signal(signal.SIGKILL)
    await stub.wait_exit()
    await wait_until(lambda: _is(ready_status(http, pod), 503), "/ready 503", [agent])

    restarted = pod.start_stub(startup_delay=0.5)  # fresh options: the default folders
    await wait_until(lambda: _is(ready_status(http, pod), 200), "ready again", [restarted, agent])
    await wait_until(lambda: pointed(http, pod, folder), "outputs re-applied", [agent])
    assert "outputs re-applied (WebUI restarted?) to" in agent.output()
    assert agent.proc.poll() is None


async def test_a_second_user_on_a_claimed_pod_is_fatal(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()
    pod.claim()
    folder = pod.outputs / SLUG
    await wait_until(lambda: pointed(http, pod, folder), "outputs applied", [stub, agent])

    pod.claim(slug="bob-fedcba9876543210", identity="bob@example.com")
    assert await agent.wait_exit() == 3
    assert "fatal: pod already belongs to" in agent.output()
    assert "single-use pods never change hands" in agent.output()
    assert points_at(await stub_options(http, pod), folder)  # never re-pointed at bob's
    assert not (pod.outputs / "bob-fedcba9876543210").exists()


async def test_a_label_that_is_no_slug_never_becomes_a_path(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()
    await wait_until(lambda: _is(ready_status(http, pod), 200), "agent ready", [stub, agent])
    pod.claim(slug="../etc")  # no broker writes this; a hand-edited label might
    await wait_until(lambda: "ignoring the claim" in agent.output(), "a warning", [agent])
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert state["user"] is None and state["ready"] is True
    assert list(pod.outputs.iterdir()) == []

    pod.claim()  # the broker's real label, later, still works
    await wait_until(lambda: pointed(http, pod, pod.outputs / SLUG), "outputs", [agent])


async def _is(value: object, want: object) -> bool:
    return await value == want  # type: ignore[misc]
