"""Real processes on loopback for the in-pod agent: the stub WebUI, the agent, the entrypoint.

The agent lives in ``webui-image/agent`` and runs as ``python -m agent`` with
``webui-image`` on PYTHONPATH, exactly as in the image. Tests drive it the way
a pod would: Downward API files in a temp dir (written the way the kubelet
writes them) and a fake Agones SDK sidecar (``FakeSDK``) on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "webui-image"
STUB = IMAGE_DIR / "stub" / "webui_stub.py"
ENTRYPOINT = IMAGE_DIR / "entrypoint.sh"
SLUG = "ann-example-com-0123456789abcdef"
IDENTITY = "Ann@example.com"
LIVENESS = 20.0  # generous, only so a hung test fails instead of hanging
# The interpreter for the agent; point it at a Python 3.10 with aiohttp to run
# these tests the way the image runs the agent (Ubuntu 22.04's Python).
AGENT_PYTHON = os.environ.get("SDB_TEST_AGENT_PYTHON", sys.executable)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any agent or Agones setting leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SDB_", "AGONES_")) and k not in ("PYTHONPATH",)
    }
    env["PYTHONPATH"] = str(IMAGE_DIR)
    env.update(extra)
    return env


class Proc:
    """A subprocess logging to a file; ``stop`` always leaves it dead."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=log_dir
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = LIVENESS) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout}s\n{self.output()}")
            await asyncio.sleep(0.05)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Pod:
    """One simulated WebUI pod: its folders, ports, and the processes started for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outputs = root / "outputs"
        self.podinfo = root / "podinfo"
        self.stub_out = root / "stub-outputs"
        self.holding = root / "holding"  # pod-local; created by the agent
        for path in (self.outputs, self.podinfo, self.stub_out):
            path.mkdir()
        self.webui_port = free_port()
        self.agent_port = free_port()
        self.agent_url = f"http://127.0.0.1:{self.agent_port}"
        self.webui_url = f"http://127.0.0.1:{self.webui_port}"
        self.procs: list[Proc] = []
        self._generation = 0
        self.write_downward({"app.kubernetes.io/managed-by": "sdbroker"}, {})

    def stub_cmd(self, startup_delay: float = 0.0) -> list[str]:
        return [
            sys.executable, str(STUB), "--port", str(self.webui_port), "--pod-id", "pod-a",
            "--delay", "0.05", "--startup-delay", str(startup_delay), "--outdir", str(self.stub_out),
        ]  # fmt: skip

    def start_stub(self, startup_delay: float = 0.0) -> Proc:
        return self._start(Proc("stub", self.stub_cmd(startup_delay), clean_env(), self.root))

    def agent_env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            SDB_AGENT_PORT=str(self.agent_port),
            SDB_AGENT_HOST="127.0.0.1",
            SDB_AGENT_WEBUI_URL=self.webui_url,
            SDB_AGENT_PODINFO_DIR=str(self.podinfo),
            SDB_AGENT_OUTPUTS_ROOT=str(self.outputs),
            SDB_AGENT_HOLDING_DIR=str(self.holding),
            SDB_AGENT_POLL_INTERVAL="100ms",
            SDB_AGENT_HEALTH_INTERVAL="100ms",
            SDB_AGENT_REQUEST_TIMEOUT="2s",
            **extra,
        )

    def start_agent(self, **extra: str) -> Proc:
        cmd = [AGENT_PYTHON, "-m", "agent"]
        return self._start(Proc("agent", cmd, self.agent_env(**extra), self.root))

    def start_entrypoint(self, *webui_cmd: str, **extra: str) -> Proc:
        env = self.agent_env(SDB_AGENT_PYTHON=AGENT_PYTHON, SDB_AGENT_HOME=str(IMAGE_DIR))
        env.update(extra)
        cmd = ["bash", str(ENTRYPOINT), *webui_cmd]
        return self._start(Proc("entrypoint", cmd, env, self.root))

    def _start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def write_downward(self, labels: dict[str, str], annotations: dict[str, str]) -> None:
        """Publish files the way the kubelet's AtomicWriter does: a timestamped
        folder, a ``..data`` symlink swapped by rename, and stable symlinks to it."""
        self._generation += 1
        stamp = self.podinfo / f"..gen_{self._generation}"
        stamp.mkdir()
        for name, values in (("labels", labels), ("annotations", annotations)):
            text = "\n".join(
                f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(values.items())
            )
            (stamp / name).write_text(text, encoding="utf-8")
        tmp = self.podinfo / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.replace(tmp, self.podinfo / "..data")
        for name in ("labels", "annotations"):
            link = self.podinfo / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def claim(self, slug: str = SLUG, identity: str = IDENTITY) -> None:
        labels = {
            "app.kubernetes.io/managed-by": "sdbroker",
            "sdbroker.io/profile": "sd15",
            "sdbroker.io/state": "claimed",
            "sdbroker.io/user": slug,
        }
        self.write_downward(labels, {"sdbroker.io/user": identity})

    def stop_all(self) -> None:
        """SIGTERM to all at once, then wait: teardown costs one grace, not one per process."""
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    pod = Pod(tmp_path)
    yield pod
    pod.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        yield session


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int | None, Any]:
    """(status, body), or (None, None) while nothing listens there."""
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None, None


async def wait_until(
    check: Callable[[], Awaitable[Any] | Any], what: str, procs: list[Proc] | None = None
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with the logs."""
    deadline = time.monotonic() + LIVENESS
    while time.monotonic() < deadline:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    logs = "\n".join(f"--- {p.name}\n{p.output()}" for p in procs or [])
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def stub_options(session: aiohttp.ClientSession, pod: Pod) -> dict[str, Any]:
    status, body = await get_json(session, f"{pod.webui_url}/sdapi/v1/options")
    return body if status == 200 else {}


def points_at(options: dict[str, Any], folder: Path) -> bool:
    return options.get("outdir_txt2img_samples") == str(folder / "txt2img-images")


async def ready_status(session: aiohttp.ClientSession, pod: Pod) -> int | None:
    status, _ = await get_json(session, f"{pod.agent_url}/ready")
    return status


async def ready_is(session: aiohttp.ClientSession, pod: Pod, want: int) -> bool:
    return await ready_status(session, pod) == want


async def pointed(session: aiohttp.ClientSession, pod: Pod, folder: Path) -> dict[str, Any] | None:
    """The stub's options once they name ``folder``, else None."""
    options = await stub_options(session, pod)
    return options if points_at(options, folder) else None


class FakeSDK:
    """The Agones SDK sidecar's REST gateway, as far as the agent uses it.

    Records every call; ``allocate`` sets labels the way a GameServerAllocation
    does and pushes the update to every open ``/watch/gameserver`` stream.
    """

    def __init__(self, port: int, state: str = "Scheduled") -> None:
        self.port = port
        self.calls: list[str] = []
        self.gameserver: dict[str, Any] = {
            "object_meta": {"name": "sd-fleet-abcde", "namespace": "default", "labels": {}},
            "status": {"state": state, "address": "127.0.0.1", "ports": []},
        }
        self.watchers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.runner: web.AppRunner | None = None

    def count(self, call: str) -> int:
        return self.calls.count(call)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/ready", self._ready)
        app.router.add_post("/health", self._health)
        app.router.add_get("/gameserver", self._get)
        app.router.add_get("/watch/gameserver", self._watch)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.drop_watches()
        if self.runner is not None:
            await self.runner.cleanup()

    def drop_watches(self) -> None:
        for queue in self.watchers:
            queue.put_nowait(None)

    def _push(self) -> None:
        for queue in self.watchers:
            queue.put_nowait(json.loads(json.dumps(self.gameserver)))

    def allocate(self, slug: str = SLUG, identity: str = IDENTITY) -> None:
        meta = self.gameserver["object_meta"]
        meta["labels"] = {"sdbroker.io/user": slug, "sdbroker.io/profile": "sd15"}
        meta["annotations"] = {"sdbroker.io/user": identity}
        self.gameserver["status"]["state"] = "Allocated"
        self._push()

    async def _ready(self, request: web.Request) -> web.Response:
        assert await request.json() == {}
        self.calls.append("ready")
        self.gameserver["status"]["state"] = "Ready"
        self._push()
        return web.json_response({})

    async def _health(self, request: web.Request) -> web.Response:
        assert await request.json() == {}
        self.calls.append("health")
        return web.json_response({})

    async def _get(self, request: web.Request) -> web.Response:
        self.calls.append("gameserver")
        return web.json_response(self.gameserver)

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("watch")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.watchers.add(queue)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            queue.put_nowait(json.loads(json.dumps(self.gameserver)))
            while (update := await queue.get()) is not None:
                await resp.write(json.dumps({"result": update}).encode() + b"\n")
        finally:
            self.watchers.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp


@pytest.fixture
async def make_sdk() -> AsyncIterator[Callable[..., FakeSDK]]:
    started: list[FakeSDK] = []

    def make(port: int | None = None, state: str = "Scheduled") -> FakeSDK:
        sdk = FakeSDK(port or free_port(), state)
        started.append(sdk)
        return sdk

    yield make
    for sdk in started:
        await sdk.stop()
