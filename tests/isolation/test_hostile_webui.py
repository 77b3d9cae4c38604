"""Every WebUI is hostile: a pod that attacks from inside, on the local backend.

alice's WebUI runs hostile code (tests/isolation/hostile_webui.py) against
bob, his WebUI and the broker. With `isolation: auto` on this machine (root,
bubblewrap installed: .ci/run installs it) every attack is refused. With
`isolation: none` the same pod succeeds at each one: the attacks are real,
and `none` is what the local backend did before.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import aiohttp
import psutil
import pytest

from fleet import slugify
from fleet.backends.isolation import RELAY, sandbox_argv
from tests.support import in_ci
from tests.support.procs import REPO, wait_for

HOSTILE = Path(__file__).with_name("hostile_webui.py")
ATTACKER = Path(__file__).with_name("attacker.py")
FLEET = """\
backend: local
idle_timeout: 15m
outputs: {outputs}
profiles:
  - name: default
    min: 0
    buffer: 2
    max: 4
    probe: a1111
    local:
      command: [python, {hostile}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.1"]
      stop_grace: 3s
      cwd: {repo}
      isolation: {isolation}
"""
ATTACKS = {
    "environment", "redis data file", "pod records", "neighbour's log", "redis socket",
    "redis tcp", "neighbour webui", "broker as proxy", "victim's images", "victim's image",
    "write to victim", "other processes",
}  # fmt: skip


def fleet_file(tmp_path: Path, isolation: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(  # cwd: the sandbox shows the repo, whose stand-in WebUI it imports
        FLEET.format(outputs=tmp_path / "out", hostile=HOSTILE, isolation=isolation, repo=REPO)
    )
    return path


@pytest.fixture
def complete_isolation() -> None:
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        if in_ci():
            pytest.fail("CI=true: .ci/run runs as root and installs bubblewrap")
        pytest.skip("needs root and bubblewrap (apt-get install bubblewrap)")


class Visitor:
    """A browser, as far as the dev login and the proxy go."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self, name: str) -> None:
        async with self.http.get(f"{self.base}/_broker/login") as resp:
            page = await resp.text()
        token = html.unescape(re.search(r'name="csrf_token" value="([^"]*)"', page)[1])
        form = {"csrf_token": token, "user": name, "next": "/_broker/healthz"}
        async with self.http.post(f"{self.base}/_broker/login", data=form) as resp:
            assert resp.status == 200, await resp.text()

    async def json(self, method: str, path: str, body: object = None) -> object:
        """The answer once there is one: 503 means the WebUI is still starting."""
        for _ in range(200):
            async with self.http.request(method, self.base + path, json=body) as resp:
                if resp.status != 503:
                    assert resp.status == 200, (path, resp.status, await resp.text())
                    return await resp.json()
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path}: still 503 after 20 s")


async def run_attacks(brokers, redis_server, tmp_path: Path, isolation: str) -> dict[str, str]:
    broker = brokers(fleet=fleet_file(tmp_path, isolation), redis=None, SDB_AUTH="dev")
    bob, alice = Visitor(broker.url), Visitor(broker.url)
    try:
        await bob.login("bob")
        bobs_pod = (await bob.json("GET", "/stub/whoami"))["pod"]
        await bob.json("POST", "/sdapi/v1/txt2img", {"prompt": "bob's cat", "steps": 1})
        bobs_folder = tmp_path / "out" / slugify("bob")
        image = wait_for(lambda: next(bobs_folder.rglob("*.png"), None), 20, what="bob's image")
        await alice.login("alice")
        alices_pod = (await alice.json("GET", "/stub/whoami"))["pod"]
        assert alices_pod != bobs_pod
        bob_rec = next(r for r in broker.pod_records() if r["id"] == bobs_pod)
        targets = {
            "data_dir": str(broker.data_dir.resolve()),
            "neighbour_log": bob_rec["log"],
            "redis_tcp": f"127.0.0.1:{redis_server.port}",  # a password-less Redis on loopback
            "neighbour_port": str(bob_rec["port"]),
            "broker": broker.url,
            "victim": "bob",
            "victim_outputs": str(bobs_folder),
            "victim_image": str(image),
        }
        results = await alice.json("POST", "/attack", targets)
    finally:
        await asyncio.gather(bob.http.close(), alice.http.close())
    # What a WebUI must keep: a writable /tmp of its own (as root with a uid per pod,
    # the sandbox's tmpfs was root's 0755 and every temp file failed).
    assert results.pop("own /tmp").startswith("ok"), results
    assert set(results) == ATTACKS
    return results


async def test_a_hostile_webui_gets_nothing(
    brokers, redis_server, tmp_path: Path, complete_isolation: None
) -> None:
    results = await run_attacks(brokers, redis_server, tmp_path, "auto")
    worked = {name: r for name, r in results.items() if not r.startswith("refused")}
    assert worked == {}
    assert not (tmp_path / "out" / slugify("bob") / "planted.png").exists()


async def test_without_isolation_the_same_attacks_work(
    brokers, redis_server, tmp_path: Path, complete_isolation: None
) -> None:
    """`isolation: none` (trusted WebUIs only): the attacks above are real ones."""
    results = await run_attacks(brokers, redis_server, tmp_path, "none")
    # The environment is scrubbed whatever the isolation; dev login believes no header,
    # so that attack fails on its own (in header mode the broker now refuses to start
    # beside such WebUIs: the test below).
    refused = {name for name, r in results.items() if r.startswith("refused")}
    assert refused == {"environment", "broker as proxy"}, results


def own_address() -> str:
    """A non-loopback address of this machine (there is one wherever a network is)."""
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    reason = "this machine has no non-loopback IPv4 address: the case needs one to trust"
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("trusted", ["127.0.0.0/8", "own/32", "0.0.0.0/0"])
def test_header_mode_will_not_trust_an_address_unsandboxed_webuis_use(
    tmp_path: Path, trusted: str
) -> None:
    """Not only loopback: an unsandboxed WebUI can connect from any address of the
    machine (bind it as its source), so trusting the host's own address is as bad."""
    trusted = trusted.replace("own", own_address())
    done = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": trusted,
             "SDB_FLEET": str(fleet_file(tmp_path, "none")), "SDB_DATA_DIR": str(tmp_path / "d"),
             "SDB_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"SDB_TRUSTED_PROXIES: {trusted} holds an address of this")
    assert "profile default" in done.stderr and "Traceback" not in done.stderr


def test_a_broker_that_is_not_root_still_sandboxes(redis_server, complete_isolation: None) -> None:
    """An ordinary user's broker: bwrap in a user namespace of its own uid, no own uid per
    pod. Network, data dir, other processes: refused; every user's outputs: readable, as
    docs/security.md says (that takes root)."""
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="sdb-nonroot-", dir="/tmp"))
    try:
        data, out = base / "data", base / "out"
        home, bobs = data / "homes" / "pod-a", out / "bob-1"
        for folder in (home, bobs, data / "pods", data / "redis"):
            folder.mkdir(parents=True)
        (data / "redis" / "appendonly.aof").write_text("SET session:alice admin")
        (bobs / "cat.png").write_bytes(b"\x89PNG bob's cat")
        for path in [base, *base.rglob("*")]:
            os.chown(path, nobody, nobody)
        neighbour = socket.create_server(("127.0.0.1", 0))  # the broker, another WebUI...
        listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        port = listener.getsockname()[1]
        argv = sandbox_argv(
            shutil.which("bwrap"), ["/usr/bin/python3", str(ATTACKER), str(port)],
            port=port, fd=listener.fileno(), uid=None, hidden=[str(data)],
            visible=[str(ATTACKER.parent), str(RELAY.parent)],
            writable=[str(out), str(home)], cwd=None,
            python="/usr/bin/python3",
        )  # fmt: skip
        pod = subprocess.Popen(
            argv, pass_fds=(listener.fileno(),), user=nobody, group=nobody, extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, start_new_session=True,
        )  # fmt: skip
        listener.close()
        try:
            targets = {
                "data_dir": str(data), "neighbour_log": str(data / "pods" / "x.log"),
                "redis_tcp": f"127.0.0.1:{redis_server.port}",
                "neighbour_port": str(neighbour.getsockname()[1]),
                "broker": f"http://127.0.0.1:{neighbour.getsockname()[1]}", "victim": "bob",
                "victim_outputs": str(bobs), "victim_image": str(bobs / "cat.png"),
            }  # fmt: skip
            results = wait_for(lambda: post_attack(port, targets), 20, what="the sandboxed pod")
        finally:
            os.killpg(pod.pid, signal.SIGKILL)
            pod.wait()
            neighbour.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert results.pop("own /tmp").startswith("ok"), results  # its own, in its user namespace
    worked = {name for name, r in results.items() if not r.startswith("refused")}
    assert worked == {"victim's images", "victim's image", "write to victim"}, results


def post_attack(port: int, targets: dict[str, str]) -> dict[str, str] | None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/attack", data=json.dumps(targets).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except OSError:
        return None  # not listening yet
