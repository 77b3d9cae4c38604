"""The agent in a plain Kubernetes pod: readiness on :7861/ready, the claim from Downward API files.

Everything is real except the kubelet: the stub WebUI and the agent are
processes, the labels file is swapped the way the kubelet swaps it, and what
the agent did is read back from the stub's own options API.
"""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import aiohttp

from tests.agent.conftest import (
    IDENTITY,
    SLUG,
    Pod,
    get_json,
    pointed,
    points_at,
    ready_is,
    stub_options,
    wait_until,
)


async def test_not_ready_while_the_webui_starts_then_ready(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub(startup_delay=1.0)
    agent = pod.start_agent(SDB_AGENT_MODE="kubernetes")

    async def loading() -> dict | None:
        status, body = await get_json(http, f"{pod.agent_url}/ready")
        return body if status == 503 and "answered 503" in body["reason"] else None

    body = await wait_until(loading, "a 503 from /ready while the stub loads", [stub, agent])
    assert body == {"ready": False, "reason": "/internal/ping answered 503 (starting)"}
    healthz, _ = await get_json(http, f"{pod.agent_url}/healthz")
    assert healthz == 200  # loading a model is alive, not broken: no liveness restart

    await wait_until(lambda: ready_is(http, pod, 200), "/ready 200", [stub, agent])
    status, body = await get_json(http, f"{pod.agent_url}/ready")
    assert (status, body) == (
        200,
        {"ready": True, "reason": "model stub-v1-5-cpu.safetensors [5tub5tub] loaded"},
    )
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert (state["mode"], state["user"], state["outputs"]) == (
        "kubernetes",
        None,
        str(pod.holding),
    )


async def test_claim_points_the_webui_at_the_users_folder_even_after_a_restart(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()  # auto mode: finds the Downward API files
    await wait_until(lambda: ready_is(http, pod, 200), "agent ready", [stub, agent])
    folder = pod.outputs / SLUG
    # Ready means saving is already aimed at the pod-local holding folder.
    assert points_at(await stub_options(http, pod), pod.holding)

    # The broker has claimed the pod and routed its user, but the kubelet has
    # not refreshed the labels file yet: this image is made before the agent
    # knows whose it is.
    early = await txt2img(http, pod, "before the label")
    assert early.startswith(str(pod.holding / "txt2img-images") + "/")

    pod.claim()
    options = await wait_until(lambda: pointed(http, pod, folder), "outputs applied", [agent])
    assert options["outdir_img2img_samples"] == str(folder / "img2img-images")
    assert options["outdir_samples"] == ""  # it would override the per-mode folders
    late = await txt2img(http, pod, "after the label")
    assert late.startswith(str(folder / "txt2img-images") + "/")

    # The early image is moved in once it has settled; nothing stays pod-local.
    await wait_until(lambda: _files(folder) == 2, "the early image moved in", [agent])
    assert _files(pod.holding) == 0
    assert "moved 1 file(s) made before the claim was seen" in agent.output()
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert (state["user"], state["outputs"], state["ready"]) == (SLUG, str(folder), True)
    assert f"claimed by {IDENTITY} (folder {SLUG})" in agent.output()

    # The WebUI dies and comes back with its default folders: not ready in
    # between, then pointed at the user's folder again, the agent unmoved.
    stub.signal(signal.SIGKILL)
    await stub.wait_exit()
    await wait_until(lambda: ready_is(http, pod, 503), "/ready 503", [agent])
    restarted = pod.start_stub(startup_delay=0.3)
    await wait_until(lambda: ready_is(http, pod, 200), "ready again", [restarted, agent])
    await wait_until(lambda: pointed(http, pod, folder), "outputs re-applied", [agent])
    assert "outputs re-applied (WebUI restarted?) to" in agent.output()
    assert agent.proc.poll() is None


async def test_only_the_first_real_user_label_is_obeyed(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    stub = pod.start_stub()
    agent = pod.start_agent()
    await wait_until(lambda: ready_is(http, pod, 200), "agent ready", [stub, agent])

    # A label that is no slug never becomes a path (no broker writes it; a hand edit might).
    pod.claim(slug="../etc")
    await wait_until(lambda: "ignoring the claim" in agent.output(), "a warning", [agent])
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert state["user"] is None and state["ready"] is True
    assert list(pod.outputs.iterdir()) == []

    pod.claim()  # the broker's real label, later, is obeyed
    folder = pod.outputs / SLUG
    await wait_until(lambda: pointed(http, pod, folder), "outputs applied", [agent])

    # A second user on a single-use pod is a broken invariant: exit, never re-point.
    pod.claim(slug="bob-fedcba9876543210", identity="bob@example.com")
    assert await agent.wait_exit() == 3
    assert "fatal: pod already belongs to" in agent.output()
    assert "single-use pods never change hands" in agent.output()
    assert points_at(await stub_options(http, pod), folder)
    assert not (pod.outputs / "bob-fedcba9876543210").exists()


async def txt2img(http: aiohttp.ClientSession, pod: Pod, prompt: str) -> str:
    """Generate through the stub's A1111 API; returns where the PNG was saved."""
    payload = {"prompt": prompt, "width": 64, "height": 64, "steps": 1, "seed": 7}
    async with http.post(f"{pod.webui_url}/sdapi/v1/txt2img", json=payload) as resp:
        assert resp.status == 200
        result = await resp.json()
    assert base64.b64decode(result["images"][0])[:8] == b"\x89PNG\r\n\x1a\n"
    (saved,) = json.loads(result["info"])["saved_paths"]
    return saved


def _files(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*.png") if path.is_file())
