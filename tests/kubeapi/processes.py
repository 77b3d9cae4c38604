"""Real processes behind simulated pods, each on its own loopback IP.

Linux routes all of 127.0.0.0/8 to `lo`, so every pod can have a distinct
podIP (127.B.0.1, 127.B.0.2, ...) and its process can listen on the container
port there, just as pods do on a cluster network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


@dataclass(frozen=True)
class ProcessInfo:
    """What a command template can use: {ip} {port} {name} {namespace} {uid} {python}."""

    name: str
    namespace: str
    uid: str
    ip: str
    port: int
    env: dict[str, str]

    def fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "ip": self.ip,
            "port": self.port,
            "python": sys.executable,
        }


@dataclass(frozen=True)
class ProcessRunner:
    """How to start the process for a pod (or GameServer).

    `command` is a list of str.format templates, or a callable building the argv.
    The pod is Ready when `http://{ip}:{port}{ready_path}` answers 2xx/3xx;
    `ready_path=None` uses the pod's readinessProbe.httpGet.path, else "/".
    """

    command: Sequence[str] | Callable[[ProcessInfo], Sequence[str]]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str | None = None
    cwd: str | Path | None = None
    log_dir: str | Path | None = None
    probe_interval: float = 0.1  # real seconds
    stop_timeout: float = 5.0  # real seconds between SIGTERM and SIGKILL, at most

    def argv(self, info: ProcessInfo) -> list[str]:
        if callable(self.command):
            return list(self.command(info))
        return [part.format(**info.fields()) for part in self.command]


class IpPool:
    """Hands out pod IPs 127.B.x.y from a random block B, never reusing one.

    The random block keeps simulators in parallel test processes apart; with a
    `port`, an address where something already listens on that port is skipped.
    """

    def __init__(self) -> None:
        self._block = random.SystemRandom().randrange(1, 255)
        self._next = 1

    def allocate(self, port: int | None = None) -> str:
        while True:
            n = self._next
            self._next += 1
            block = (self._block + n // 65536 - 1) % 254 + 1
            low, high = (n >> 8) & 255, n & 255
            if high in (0, 255):
                continue
            ip = f"127.{block}.{low}.{high}"
            if port is None or _bindable(ip, port):
                return ip


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class PodProcess:
    """One running process: start, probe for readiness, wait for exit, stop."""

    def __init__(self, runner: ProcessRunner, info: ProcessInfo, ready_path: str) -> None:
        self.runner = runner
        self.info = info
        self.ready_path = ready_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def url(self) -> str:
        return f"http://{self.info.ip}:{self.info.port}"

    async def start(self) -> None:
        env = {**os.environ, **self.info.env, **self.runner.env}
        stdout: Any = asyncio.subprocess.DEVNULL
        if self.runner.log_dir is not None:
            log = Path(self.runner.log_dir) / f"{self.info.namespace}_{self.info.name}.log"
            stdout = log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.runner.argv(self.info),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.runner.cwd,
                start_new_session=True,
            )
        finally:
            if stdout is not asyncio.subprocess.DEVNULL:
                stdout.close()

    async def wait_ready(self, session: aiohttp.ClientSession) -> bool:
        """Probe until the process answers; False if it exits first."""
        url = self.url + self.ready_path
        while self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if 200 <= resp.status < 400:
                        return True
            await asyncio.sleep(self.runner.probe_interval)
        return False

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL after `grace` real seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(max(0.0, min(grace, self.runner.stop_timeout))):
                await proc.wait()
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await proc.wait()

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
