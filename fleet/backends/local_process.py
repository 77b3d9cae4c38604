"""A local pod's process: its loopback port, its start as a process group, whether
it still runs, its stop.

Kept apart from local.py (records and claims) because this is the part that
touches the operating system's processes, signals and sockets, and the part a
change of how pods are started (a sandbox, a uid) reaches first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from ..errors import BackendError
from .local_records import EXITED, proc_stat

RECENT_PORTS = 512  # never hand a just-freed port to a new pod: a stale route must not reach it


class LoopbackPorts:
    """Listening sockets on free loopback ports, none of the last RECENT_PORTS handed out."""

    def __init__(self) -> None:
        self._recent: deque[int] = deque(maxlen=RECENT_PORTS)

    def listen(self) -> socket.socket:
        """A listening socket on a free loopback port (not one freed just now)."""
        for _ in range(100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in self._recent:
                self._recent.append(port)
                sock.listen(1024)
                return sock
            sock.close()
        raise BackendError("no free loopback port")


def spawn(
    command: list[str],
    cwd: str | None,
    env: dict[str, str],
    log_path: Path,
    *,
    uid: int | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Fork off the thread: a fork of a big broker process must not stall the event loop."""
    as_uid: dict[str, Any] = {}
    if uid is not None:  # the pod's own uid and group, no supplementary groups of ours
        as_uid = {"user": uid, "group": uid, "extra_groups": [], "umask": 0o022}
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: survives us, killed as a group
            pass_fds=pass_fds,
            **as_uid,
        )


class Liveness:
    """Whether a pod's process still runs, told as cheaply as it can be: a controller's
    pass asks it of every pod."""

    def __init__(self, children: Mapping[str, subprocess.Popen[bytes]]) -> None:
        self._children = children  # this broker's own (pod id -> Popen), read live
        #: pod id -> (pid, start ticks) of another broker's pod once psutil has matched it.
        self._started: dict[str, tuple[int, bytes]] = {}

    def __call__(self, data: dict[str, Any]) -> bool:
        child = self._children.get(data["id"])
        if child is not None:
            # Our own child: not reaped means running (a zombie is reaped by poll), and
            # its pid cannot be reused meanwhile. 60x cheaper than asking /proc.
            return child.poll() is None
        # Another broker's pod (after a restart, or when this broker leads the controller
        # but did not start the fleet): psutil's check costs ~55 us, most of a pass over
        # hundreds of pods. Once psutil has matched the pid to the record, the process's
        # start time in /proc/<pid>/stat (one read, ~8 us) tells it is still the same one.
        try:
            pid = int(data["pid"])
        except (KeyError, ValueError):
            return False
        stat = proc_stat(pid)
        if stat is not None and self._started.get(data["id"]) == (pid, stat[1]):
            return stat[0] not in EXITED
        try:
            proc = psutil.Process(pid)
            alive = (
                abs(proc.create_time() - float(data["pid_created"])) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.Error, KeyError, ValueError):
            return False
        if alive and stat is not None:  # read before psutil's check: the same process
            self._started[data["id"]] = (pid, stat[1])
        return alive

    def keep_only(self, records: Mapping[str, object]) -> None:
        """Forget pods gone since: RECORDS is every record file's name ("<id>.json")."""
        if len(self._started) > len(records):
            self._started = {k: v for k, v in self._started.items() if f"{k}.json" in records}


async def stop_group(
    pid: int, grace: float, children: Mapping[str, subprocess.Popen[bytes]]
) -> None:
    """SIGTERM to the pod's process group, up to GRACE seconds to end, then SIGKILL.

    CHILDREN are this broker's own (pod id -> Popen), read live: the pod's own child
    is polled, so its end is seen (and it is reaped) at once."""
    try:
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        child = next((c for c in children.values() if c.pid == pid), None)
        if child is not None and child.poll() is not None:
            break
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
