"""A hostile pod against the settings keeper (fleet/webui_settings.py): a real HTTP server
on loopback answers what a WebUI running its user's code could, the files are real.

Nothing escapes the user's folder, nothing of anyone else's is read, the caps hold,
and what does not pass keeps the last good copy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from fleet.webui_settings import (
    FILE_MAX,
    FILES_MAX,
    TOTAL_MAX,
    Keeper,
    SettingsError,
    Store,
    WebUISettings,
)


class HostilePod:
    """Answers whatever the test sets, and records what it was sent."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.posted: list[tuple[str, bytes]] = []
        self.url = ""

    def set(self, path: str, value: object) -> None:
        self.answers[path] = value if isinstance(value, bytes) else json.dumps(value).encode()

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.posted.append((request.path_qs, await request.read()))
            return web.json_response(None)
        body = self.answers.get(request.path_qs)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/json")


@pytest.fixture
async def pod() -> AsyncIterator[HostilePod]:
    hostile = HostilePod()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", hostile.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hostile.url = f"http://127.0.0.1:{port}"
    yield hostile
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    outputs, home = tmp_path / "outputs", tmp_path / "home"
    for p in (outputs / "alice", outputs / "bob", home):
        p.mkdir(parents=True)
    (outputs / "bob" / "secret.png").write_bytes(b"bob's")
    return outputs, outputs / "alice" / ".webui-settings" / "a1111", home


async def test_a1111_answers_that_do_not_pass_keep_the_last_good_copy(
    pod: HostilePod, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outputs, kept, home = folders(tmp_path)
    keeper = Keeper(
        WebUISettings(http, pod.url, "a1111", str(home)), Store(str(outputs), "alice", "a1111")
    )
    pod.set("/sdapi/v1/options", {
        "samples_format": "jpg", "outdir_samples": "/outputs/bob", "outdir_txt2img_samples": "/etc",
        "temp_dir": "/outputs/bob", "sd_model_checkpoint": "x.safetensors",
    })  # fmt: skip
    pod.set("/sdapi/v1/prompt-styles", [{"name": "noir", "prompt": "p", "negative_prompt": ""}])
    # Its ui-config.json is a link to bob's image: never followed.
    (home / "ui-config.json").symlink_to(outputs / "bob" / "secret.png")
    assert await keeper.save() == 2
    good = json.loads((kept / "config.json").read_text())
    assert good == {"samples_format": "jpg"}  # the broker's keys are never kept
    assert sorted(os.listdir(kept)) == ["config.json", "styles.csv"]

    deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError in json: no ValueError
    for answer in (b"x" * (FILE_MAX + 10), [1, 2], b"not json", {"a": "y" * FILE_MAX}, deep):
        pod.set("/sdapi/v1/options", answer)
        with pytest.raises(SettingsError):
            await keeper.save()
        assert json.loads((kept / "config.json").read_text()) == good
    pod.set("/sdapi/v1/options", {"samples_format": "png"})
    pod.set("/sdapi/v1/prompt-styles", {"not": "a list"})
    with pytest.raises(SettingsError):
        await keeper.save()
    assert json.loads((kept / "config.json").read_text()) == good

    # Restore posts no key the broker owns, even one planted in the kept file by hand.
    (kept / "config.json").write_text(json.dumps({**good, "outdir_samples": "/outputs/bob"}))
    (home / "styles.csv").symlink_to(outputs / "bob" / "secret.png")
    await keeper.restore()
    [(path, body)] = [p for p in pod.posted if p[0] == "/sdapi/v1/options"]
    assert json.loads(body) == good
    assert (outputs / "bob" / "secret.png").read_bytes() == b"bob's"  # the link was replaced
    assert not (home / "styles.csv").is_symlink()
    assert "noir" in (home / "styles.csv").read_text()


async def test_a_settings_folder_the_pod_swapped_for_a_link_is_refused(
    pod: HostilePod, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    outputs, kept, home = folders(tmp_path)
    (outputs / "alice" / ".webui-settings").symlink_to(outputs / "bob", target_is_directory=True)
    keeper = Keeper(
        WebUISettings(http, pod.url, "a1111", str(home)), Store(str(outputs), "alice", "a1111")
    )
    pod.set("/sdapi/v1/options", {"samples_format": "jpg"})
    pod.set("/sdapi/v1/prompt-styles", [])
    with pytest.raises(OSError):
        await keeper.save()
    assert sorted(os.listdir(outputs / "bob")) == ["secret.png"]
    with pytest.raises(OSError):
        await keeper.restore()  # nothing read through it either
    assert pod.posted == []


async def test_a_file_planted_in_the_folder_is_never_restored(
    pod: HostilePod, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    outputs, kept, home = folders(tmp_path)
    store = Store(str(outputs), "alice", "a1111")
    store.save({"config.json": b'{"samples_format": "jpg"}'})
    planted = kept / "styles.csv"
    planted.write_text("name,prompt,negative_prompt\nevil,x,y\n")
    if os.geteuid() == 0:
        os.chown(planted, 12345, 12345)  # made by a pod's own uid
        assert sorted(store.load()) == ["config.json"]
    (kept / "config.json").unlink()
    (kept / "config.json").symlink_to(outputs / "bob" / "secret.png")
    assert "config.json" not in store.load()


async def test_comfyui_workflow_names_and_caps(
    pod: HostilePod, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outputs, _, home = folders(tmp_path)
    kept = outputs / "alice" / ".webui-settings" / "comfyui"
    keeper = Keeper(
        WebUISettings(http, pod.url, "comfyui"), Store(str(outputs), "alice", "comfyui")
    )
    pod.set("/settings", {"Comfy.ColorPalette": "dark"})
    bad = ["../../x", "a/b", ".hidden", "x" * 300, "..", "ok\n.json"]
    good = [f"w{n:03}.json" for n in range(FILES_MAX + 5)]
    pod.set("/userdata?dir=workflows", bad + good)
    big = {"nodes": ["n" * (FILE_MAX - 100)]}
    for name in good:
        pod.set("/userdata/workflows%2F" + name, big if name < "w010" else {"nodes": []})
    for name in bad:  # never asked for: a name is checked before any request
        pod.set("/userdata/workflows%2F" + name.replace("/", "%2F"), {"evil": True})
    with caplog.at_level(logging.WARNING):
        await keeper.save()
    names = sorted(os.listdir(kept / "workflows"))
    assert not (tmp_path / "x").exists() and not (outputs / "x").exists()
    assert all(n in good for n in names)
    total = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file())
    assert total <= TOTAL_MAX and len(names) + 1 <= FILES_MAX
    assert "over the caps" in caplog.text and "refused file name" in caplog.text
    # Nothing truncated: what is kept is whole.
    for name in names:
        json.loads((kept / "workflows" / name).read_text())
    assert sorted(os.listdir(outputs / "bob")) == ["secret.png"]


async def test_a_workflow_deleted_in_comfyui_is_removed_only_after_a_whole_fetch(
    pod: HostilePod, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A save mirrors deletions of workflows only when it saw every one the pod lists
    (after a restore that gave the pod every kept one): a listing that fails, a file that
    does not pass, or a restore not done deletes nothing; a link planted there stays."""
    outputs, _, _ = folders(tmp_path)
    flows = outputs / "alice" / ".webui-settings" / "comfyui" / "workflows"
    keeper = Keeper(
        WebUISettings(http, pod.url, "comfyui"), Store(str(outputs), "alice", "comfyui")
    )
    pod.set("/settings", {"Comfy.ColorPalette": "dark"})
    pod.set("/userdata?dir=workflows", ["a.json", "b.json"])
    for name in ("a.json", "b.json"):
        pod.set("/userdata/workflows%2F" + name, {"nodes": [name]})
    assert await keeper.save() == 3  # not restored yet: nothing could be mirrored anyway
    await keeper.restore()
    (flows / "link.json").symlink_to(outputs / "bob" / "secret.png")

    # The listing fails: the save fails, nothing removed.
    pod.set("/userdata?dir=workflows", b"not json")
    with pytest.raises(SettingsError):
        await keeper.save()
    # Only a listed, but a.json does not pass: a partial fetch, nothing removed.
    pod.set("/userdata?dir=workflows", ["a.json"])
    pod.set("/userdata/workflows%2Fa.json", b"not json")
    await keeper.save()
    assert sorted(os.listdir(flows)) == ["a.json", "b.json", "link.json"]

    # Only a listed, and read whole: b, deleted in ComfyUI, is removed from the kept folder.
    pod.set("/userdata/workflows%2Fa.json", {"nodes": ["a2"]})
    assert await keeper.save() == 2
    assert sorted(os.listdir(flows)) == ["a.json", "link.json"]
    assert json.loads((flows / "a.json").read_text()) == {"nodes": ["a2"]}
    assert (outputs / "bob" / "secret.png").read_bytes() == b"bob's"

    # A keeper whose restore never ran (or failed) mirrors nothing.
    pod.set("/userdata?dir=workflows", [])
    fresh = Keeper(WebUISettings(http, pod.url, "comfyui"), Store(str(outputs), "alice", "comfyui"))
    await fresh.save()
    assert sorted(os.listdir(flows)) == ["a.json", "link.json"]
