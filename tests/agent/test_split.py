"""The split pod: the WebUI saves into a handoff folder, only the agent touches the outputs.

As the pods sdbroker builds run it (fleet/backends/kubepods.py): the image's
entrypoint once as ``SDB_ROLE=webui`` (the WebUI alone; here the stub) and
once as ``SDB_ROLE=agent``. On one machine both see the handoff folder at
the same path, so ``SDB_AGENT_WEBUI_OUTPUTS`` names it too; in a pod the
WebUI sees it at ``/outputs`` and never the volume itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp

from tests.agent.conftest import (
    SLUG,
    Pod,
    get_json,
    pointed,
    points_at,
    ready_is,
    stub_options,
    wait_until,
)
from tests.agent.test_kubernetes import txt2img

BOB = "bob-fedcba9876543210"


def split_env(pod: Pod, **extra: str) -> dict[str, str]:
    handoff = pod.root / "handoff"
    handoff.mkdir(exist_ok=True)  # an emptyDir: there before either container starts
    return {
        "SDB_AGENT_MODE": "kubernetes",
        "SDB_AGENT_HOLDING_DIR": str(handoff),
        "SDB_AGENT_WEBUI_OUTPUTS": str(handoff),
        **extra,
    }


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def group_writable(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o020)


def links_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_symlink()]


async def test_the_webui_saves_into_the_handoff_and_the_agent_moves_it_to_the_user(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    env = split_env(pod)
    handoff, folder = pod.root / "handoff", pod.outputs / SLUG
    webui = pod.start_entrypoint(*pod.stub_cmd(), SDB_ROLE="webui", **env)
    agent = pod.start_entrypoint(SDB_ROLE="agent", **env)
    procs = [webui, agent]
    await wait_until(lambda: ready_is(http, pod, 200), "agent ready", procs)
    # Unclaimed: the WebUI saves into the handoff folder, never onto the volume.
    assert points_at(await stub_options(http, pod), handoff)
    early = Path(await txt2img(http, pod, "before the label"))
    assert early.is_relative_to(handoff)
    # The WebUI's umask leaves what it saves removable by the agent's uid (same group).
    assert group_writable(early)

    pod.claim()
    # Claimed: under <handoff>/<slug>, the folder the broker names (/outputs/<slug>).
    await wait_until(lambda: pointed(http, pod, handoff / SLUG), "outputs applied", procs)
    late = Path(await txt2img(http, pod, "after the label"))
    assert late.is_relative_to(handoff / SLUG / "txt2img-images")

    def moved() -> dict[str, bytes] | None:
        found = files_under(folder)
        return found if sum(name.endswith(".png") for name in found) == 2 else None

    found = await wait_until(moved, "both images on the volume", procs)
    assert {name.rsplit("/", 1)[0] for name in found}.pop().startswith("txt2img-images")
    assert not [p for p in handoff.rglob("*.png")]  # nothing left behind
    assert f"file(s) into {folder}" in agent.output()
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert (state["layout"], state["user"], state["ready"]) == ("split", SLUG, True)
    # The WebUI's container runs the WebUI alone: the agent is the other container.
    assert "started agent" not in webui.output()
    assert not list(pod.outputs.glob(f"*/{SLUG}"))  # no <slug>/<slug> doubling


async def test_links_in_the_handoff_never_reach_another_users_images(
    pod: Pod, http: aiohttp.ClientSession
) -> None:
    """What a hostile WebUI leaves in the folder it shares with the agent is only ever its own."""
    bob = pod.outputs / BOB
    (bob / "txt2img-images").mkdir(parents=True)
    (bob / "txt2img-images" / "secret.png").write_bytes(b"bob's secret")
    before = files_under(bob)
    env = split_env(pod)
    handoff, folder = pod.root / "handoff", pod.outputs / SLUG
    stub = pod.start_stub()
    agent = pod.start_entrypoint(SDB_ROLE="agent", **env)
    pod.claim()
    await wait_until(lambda: pointed(http, pod, handoff / SLUG), "claimed", [stub, agent])

    mine = handoff / SLUG / "mine"
    mine.mkdir(parents=True)
    (mine / "steal.png").symlink_to(bob / "txt2img-images" / "secret.png")
    (mine / "bob").symlink_to(bob, target_is_directory=True)
    (handoff / "txt2img-images").symlink_to(bob / "txt2img-images", target_is_directory=True)
    os.mkfifo(mine / "pipe.png")  # opening it for reading would block a naive agent
    (mine / "ok.png").write_bytes(b"alice's own")
    os.utime(mine / "ok.png", (1, 1))  # long settled

    await wait_until(lambda: (folder / "mine" / "ok.png").is_file(), "ok.png moved", [agent])
    await wait_until(lambda: ready_is(http, pod, 200), "still ready", [agent])
    assert files_under(folder) == {"mine/ok.png": b"alice's own"}
    assert links_under(folder) == []
    assert files_under(bob) == before  # not moved, not copied, not touched
    assert (mine / "steal.png").is_symlink() and stat.S_ISFIFO(os.lstat(mine / "pipe.png").st_mode)
    assert agent.proc.poll() is None
