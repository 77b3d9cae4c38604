"""A person's WebUI settings follow them to their next pod, and go nowhere else (issue 19, 4).

End to end on the local backend: a real broker, a real Redis, real stub WebUIs (which
keep styles.csv and ui-config.json as A1111 v1.10.1 does, webui-image/stub/stub_styles.py).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from fleet import SpecError, parse_spec, slugify
from fleet.backends import local_settings
from fleet.backends.kubepods import build_pod
from tests.chaos.support import as_user, pod_of, until
from tests.support.procs import STUB, Broker, free_port, http_ok, wait_for

REPO = Path(__file__).resolve().parent.parent
HTML = {"Accept": "text/html,application/xhtml+xml"}
FLEET = """\
backend: local
idle_timeout: 2s
outputs: {outputs}
profiles:
  - name: default
    min: 0
    buffer: 2
    max: 4
    probe: a1111
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3",
                --styles-file, "{{home}}/styles.csv", --ui-config-file, "{{home}}/ui-config.json"]
      stop_grace: 3s
"""


@pytest.mark.parametrize("name", ["webui_settings.py", "settings_store.py"])
def test_the_agent_runs_the_same_settings_code(name: str) -> None:
    """One implementation: the agent's copy (it cannot import fleet) is byte for byte fleet's."""
    fleet = (REPO / "fleet" / name).read_bytes()
    agent = (REPO / "webui-image" / "agent" / name).read_bytes()
    assert agent == fleet


async def _call(
    http: aiohttp.ClientSession, base: str, user: str, method: str, path: str, body: object = None
) -> object:
    async with http.request(method, base + path, json=body, headers=as_user(user)) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def _start_new(http: aiohttp.ClientSession, broker: Broker, user: str, pod: str) -> str:
    """Once POD is reclaimed and gone: the page load says why, its button starts a new WebUI."""

    async def gone() -> bool:
        records = await asyncio.to_thread(broker.pod_records)
        return all(r["id"] != pod for r in records)

    await until(gone, 30, what=f"{user}'s pod reclaimed and stopped", every=0.3)
    base = broker.url
    async with http.get(base + "/", headers=as_user(user, **HTML)) as resp:
        page = await resp.text()
    assert "Start a new WebUI" in page, page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = {"csrf_token": html.unescape(token[1]), "next": "/"}
    async with http.post(
        base + "/_broker/start", data=form, headers=as_user(user), allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    return await pod_of(http, base, user)


async def test_settings_follow_alice_to_her_next_pod_and_never_reach_bob(
    brokers: Callable[..., Broker], tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=outputs, stub=STUB))
    broker = brokers(fleet=fleet, SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32",
                     SDB_REAP_INTERVAL="0.5s", SDB_ACTIVITY_FLUSH="0.2s")  # fmt: skip
    base = broker.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        first = await pod_of(http, base, "alice")
        mine = {"CLIP_stop_at_last_layers": 2, "samples_format": "jpg"}
        await _call(http, base, "alice", "POST", "/sdapi/v1/options", mine)
        style = {"name": "noir", "prompt": "film noir, {prompt}", "negative_prompt": "colour"}
        await _call(http, base, "alice", "POST", "/stub/ui/save-style", style)
        defaults = {"txt2img/Sampling steps/value": 42}
        await _call(http, base, "alice", "POST", "/stub/ui/save-ui-config", defaults)

        # Idle for idle_timeout: reclaimed; the pod is stopped, her settings kept first.
        second = await _start_new(http, broker, "alice", first)
        assert second != first
        options = await _call(http, base, "alice", "GET", "/sdapi/v1/options")
        assert isinstance(options, dict)
        assert {k: options.get(k) for k in mine} == mine
        # The Styles refresh button (all a running A1111 rereads styles.csv on) shows hers.
        assert await _call(http, base, "alice", "POST", "/stub/ui/refresh-styles") == ["noir"]
        styles = await _call(http, base, "alice", "GET", "/sdapi/v1/prompt-styles")
        assert styles == [style]
        # ui-config.json is read when A1111 builds its UI: there at the next Reload UI.
        await _call(http, base, "alice", "POST", "/stub/ui/reload")
        assert await _call(http, base, "alice", "GET", "/stub/ui/config") == defaults
        # Her own folder keeps them, hidden, and the pod's outdir_* keys were not saved.
        kept = outputs / slugify("alice") / ".webui-settings" / "a1111"
        assert sorted(p.name for p in kept.iterdir()) == [
            "config.json", "styles.csv", "ui-config.json",
        ]  # fmt: skip
        config = json.loads((kept / "config.json").read_text())
        assert config["samples_format"] == "jpg"
        assert not [k for k in config if k.startswith("outdir_")]
        assert (kept.parent.stat().st_mode & 0o777) == 0o700

        # Bob's pod gets none of it.
        await pod_of(http, base, "bob")
        options = await _call(http, base, "bob", "GET", "/sdapi/v1/options")
        assert isinstance(options, dict) and options.get("samples_format") != "jpg"
        assert await _call(http, base, "bob", "POST", "/stub/ui/refresh-styles") == []
        assert await _call(http, base, "bob", "GET", "/stub/ui/config") == {}
        assert not (outputs / slugify("bob") / ".webui-settings").exists()

        # A restore that fails (carol's settings folder is a link a pod planted) is logged,
        # and her session goes on; nothing is read or written through the link.
        carol = outputs / slugify("carol")
        carol.mkdir()
        (carol / ".webui-settings").symlink_to(kept.parent, target_is_directory=True)
        await pod_of(http, base, "carol")
        options = await _call(http, base, "carol", "GET", "/sdapi/v1/options")
        assert isinstance(options, dict) and options.get("samples_format") != "jpg"
        assert f"could not restore the settings of {carol.name} " in broker.log_text()


SPEC = """\
backend: local
outputs: /tmp/out
profiles:
  - name: a
    max: 1
    probe: {probe}
{extra}    local:
      command: [python, x.py, --port, "{{port}}"]
"""


def test_keep_settings_is_a_profile_switch_on_by_default_for_a1111_and_comfyui() -> None:
    def kept(probe: str, extra: str = "") -> bool:
        return parse_spec(SPEC.format(probe=probe, extra=extra)).profiles[0].keep_settings

    assert kept("a1111") and kept("comfyui") and not kept("http:/healthz")
    assert not kept("a1111", "    keep_settings: false\n")
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.format(probe="a1111", extra="    keep_settings: sometimes\n"), "f.yaml")
    assert (
        str(caught.value)
        == "f.yaml:7: profiles[0].keep_settings: must be true or false, got 'sometimes'"
    )


def test_keep_settings_false_reaches_the_pods_agent() -> None:
    def agent_env(extra: str) -> dict[str, str]:
        text = SPEC.format(probe="a1111", extra=extra).replace(
            "backend: local", "backend: kubernetes"
        )
        text = text.replace("    local:\n      command: [python, x.py, --port, \"{port}\"]\n",
                            "    kubernetes:\n      image: sd:1\n      volumes: {outputs: {claim: sd-outputs}}\n")  # fmt: skip
        pod = build_pod(parse_spec(text).profiles[0], "p1")
        [agent] = [c for c in pod["spec"]["containers"] if c["name"] == "agent"]
        return {e["name"]: e["value"] for e in agent["env"]}

    assert "SDB_AGENT_KEEP_SETTINGS" not in agent_env("")
    assert agent_env("    keep_settings: false\n")["SDB_AGENT_KEEP_SETTINGS"] == "0"


async def test_the_local_backend_saves_on_change_while_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LocalSettings' loop (every SAVE_EVERY, here 0.2 s) keeps a change made mid-session,
    with no stop needed; forgetting the pod ends the loop."""
    monkeypatch.setattr(local_settings, "SAVE_EVERY", 0.2)
    port, home, outputs = free_port(), tmp_path / "home", tmp_path / "outputs"
    home.mkdir()
    (outputs / "dana").mkdir(parents=True)
    stub = await asyncio.create_subprocess_exec(
        sys.executable, str(STUB), "--port", str(port), "--pod-id", "p", "--outdir", str(tmp_path),
        "--styles-file", str(home / "styles.csv"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    told: list[tuple[str, str, str]] = []
    keeping = local_settings.LocalSettings(lambda *outcome: told.append(outcome))
    addr = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for, lambda: http_ok(addr + "/internal/ping"), 20, what="stub")
        async with aiohttp.ClientSession() as http:
            keeper = keeping.keeper(http, addr, "a1111", str(home), str(outputs), "dana", "p1")
            await keeping.claimed("p", keeper)
            async with http.post(addr + "/sdapi/v1/options", json={"samples_format": "gif"}):
                pass
            kept = outputs / "dana" / ".webui-settings" / "a1111" / "config.json"

            async def saved() -> bool:
                return kept.exists() and '"gif"' in kept.read_text()

            await until(saved, 10, what="the change kept")
            assert keeping.watching("p")
            await keeping.forget("p")
            assert not keeping.watching("p") and keeping.failures == 0
            # Each look is told to the broker's metrics (sdbroker_settings_total).
            assert told[0] == ("p1", "restore", "ok") and ("p1", "save", "ok") in told
    finally:
        stub.terminate()
        await stub.wait()
