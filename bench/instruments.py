"""Instruments that watch while a benchmark runs: Redis commands, py-spy, fd limits."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path


class RedisMonitor(threading.Thread):
    """Commands clients send, by name, seen through MONITOR: those run inside Lua
    scripts are left out (a script call counts once), and so is INFO."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def run(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            *lines, buf = (buf + data).split(b"\r\n")
            seen = Counter()
            for line in lines:
                match = _MONITOR_LINE.match(line)
                if match and match.group(1) != b"lua":
                    seen[match.group(2).decode().lower()] += 1
            seen.pop("info", None)
            with self._lock:
                self._counts.update(seen)

    def snapshot(self) -> dict[str, int]:
        time.sleep(0.05)  # let lines already sent arrive
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


_MONITOR_LINE = re.compile(rb'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in delta.items() if v}


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
