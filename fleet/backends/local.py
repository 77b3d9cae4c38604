"""The `local` backend: one WebUI process per pod on this machine.

Each pod is a process group of its own (it outlives a broker restart and is
adopted again), listening on a free loopback port, logging to a file per pod.
Its record is a JSON file under the data dir: that, not Redis, is the truth
the index is rebuilt from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from ..errors import BackendError, Conflict, PodGone
from ..model import Phase, PodRecord
from ..spec import FleetSpec, Profile
from .base import Backend

log = logging.getLogger(__name__)
_RECENT_PORTS = 512  # never hand a just-freed port to a new pod: a stale route must not reach it


def _spawn(
    command: list[str], cwd: str | None, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Fork off the thread: a fork of a big broker process must not stall the event loop."""
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: survives us, killed as a group
        )


class LocalBackend(Backend):
    name = "local"
    probes_readiness = True

    def __init__(self, spec: FleetSpec, data_dir: Path) -> None:
        super().__init__(spec)
        self.records_dir = Path(data_dir).resolve() / "pods"
        self.logs_dir = Path(data_dir).resolve() / "logs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._recent_ports: deque[int] = deque(maxlen=_RECENT_PORTS)
        self._creating = asyncio.Lock()  # a slot is chosen and recorded before the next is chosen
        self._in_flight: set[asyncio.Task[PodRecord]] = set()
        self._outputs: tuple[str, Path] = ("", Path())  # (spec.outputs, resolved)
        #: file name -> ((inode, mtime, size), parsed record): what _all read last time.
        self._parsed: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    async def start(self) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)

    # --- records ------------------------------------------------------------

    def _path(self, pod_id: str) -> Path:
        return self.records_dir / f"{pod_id}.json"

    def _read(self, pod_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(pod_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write(self, data: dict[str, Any]) -> None:
        path = self._path(data["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def _all(self) -> list[dict[str, Any]]:
        """Every record, by name. A file unchanged since the last call (same inode, mtime
        and size: a record is only ever replaced whole) is not read and parsed again, so
        the controller's pass costs a stat per pod. Read the dicts, never change them."""
        try:
            with os.scandir(self.records_dir) as it:
                entries = sorted((e for e in it if e.name.endswith(".json")), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        known, parsed = self._parsed, {}
        for entry in entries:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            hit = known.get(entry.name)
            data = hit[1] if hit is not None and hit[0] == stamp else self._read(entry.name[:-5])
            if data:
                parsed[entry.name] = (stamp, data)
        self._parsed = parsed
        return [data for _, data in parsed.values()]

    # --- processes ------------------------------------------------------------

    def _alive(self, data: dict[str, Any]) -> bool:
        child = self._children.get(data["id"])
        if child is not None:
            # Our own child: not reaped means running (a zombie is reaped by poll), and
            # its pid cannot be reused meanwhile. 60x cheaper than asking /proc.
            return child.poll() is None
        try:
            proc = psutil.Process(int(data["pid"]))
            return (
                abs(proc.create_time() - float(data["pid_created"])) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.Error, KeyError, ValueError):
            return False

    def _record(self, data: dict[str, Any]) -> PodRecord:
        alive = self._alive(data)
        child = self._children.get(data["id"])
        reason = ""
        if not alive:
            code = child.poll() if child is not None else None
            reason = f"process exited (code {code}); log: {data.get('log', '')}"
        return PodRecord(
            id=data["id"],
            profile=data["profile"],
            phase=Phase.STARTING if alive else Phase.GONE,
            addr=data["addr"],
            user=data.get("user", ""),
            created=float(data.get("created", 0)),
            claimed_at=float(data.get("claimed_at", 0)),
            reason=reason,
            extra={
                "pid": str(data["pid"]),
                "port": str(data["port"]),
                "slot": str(data.get("slot", "")),
            },
        )

    def _free_port(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self._recent_ports:
                self._recent_ports.append(port)
                return port
        raise BackendError("no free loopback port")

    def _free_slot(self, profile: Profile) -> int | None:
        assert profile.local is not None
        if not profile.local.gpus:
            return None
        used = {
            d.get("slot") for d in self._all() if d["profile"] == profile.name and self._alive(d)
        }
        for gpu in profile.local.gpus:
            if gpu not in used:
                return gpu
        raise BackendError(f"profile {profile.name}: every GPU slot is in use")

    async def create(self, profile: Profile, pod_id: str) -> PodRecord:
        """Start a pod; runs to its record even if the caller is cancelled meanwhile.

        A process spawned but never recorded would be invisible to stop_all
        and outlive the broker, so the spawn-and-record step is shielded.
        """
        task = asyncio.ensure_future(self._create_serialised(profile, pod_id))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def _create_serialised(self, profile: Profile, pod_id: str) -> PodRecord:
        async with self._creating:
            return await self._create(profile, pod_id)

    async def _create(self, profile: Profile, pod_id: str) -> PodRecord:
        if profile.local is None:
            raise BackendError(f"profile {profile.name} has no local: block")
        port = self._free_port()
        slot = self._free_slot(profile)
        command = profile.local.argv(port, pod_id)
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # the broker's interpreter: `python` may not be on PATH
        env = {**os.environ, **profile.local.env, "SDB_POD_ID": pod_id}
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot)
        log_path = self.logs_dir / f"{pod_id}.log"
        try:
            child = await asyncio.to_thread(_spawn, command, profile.local.cwd, env, log_path)
        except OSError as exc:
            raise BackendError(f"profile {profile.name}: cannot start {command[0]}: {exc}") from exc
        self._children[pod_id] = child
        data = {
            "id": pod_id,
            "profile": profile.name,
            "port": port,
            "addr": f"http://127.0.0.1:{port}",
            "pid": child.pid,
            "pid_created": psutil.Process(child.pid).create_time(),
            "slot": slot,
            "created": time.time(),
            "log": str(log_path),
            "command": command,
        }
        self._write(data)
        log.info("started pod %s (pid %s) on port %s", pod_id, child.pid, port)
        return self._record(data)

    async def delete(self, pod_id: str) -> None:
        data = self._read(pod_id)
        if data is None:
            return
        grace = 10.0
        with contextlib.suppress(KeyError):
            profile = self.spec.profile(data["profile"])
            if profile.local is not None:
                grace = profile.local.stop_grace
        if self._alive(data):
            await self._stop_group(int(data["pid"]), grace)
        child = self._children.pop(pod_id, None)
        if child is not None:
            child.poll()
        self._path(pod_id).unlink(missing_ok=True)
        log.info("deleted pod %s", pod_id)

    async def _stop_group(self, pid: int, grace: float) -> None:
        try:
            pgid = os.getpgid(pid)
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
            child = next((c for c in self._children.values() if c.pid == pid), None)
            if child is not None and child.poll() is not None:
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    # File reads and process checks run in a thread: with hundreds of pods they
    # would otherwise stall the event loop that proxies users' traffic.

    async def observe(self) -> list[PodRecord]:
        return await asyncio.to_thread(lambda: [self._record(d) for d in self._all()])

    async def phase_of(self, pod_id: str) -> PodRecord | None:
        data = await asyncio.to_thread(self._read, pod_id)
        return await asyncio.to_thread(self._record, data) if data else None

    async def mark_claimed(self, pod_id: str, user: str, slug: str) -> None:
        await asyncio.to_thread(self._mark_claimed, pod_id, user, slug)

    def _mark_claimed(self, pod_id: str, user: str, slug: str) -> None:
        data = self._read(pod_id)
        if data is None or not self._alive(data):
            raise PodGone(f"pod {pod_id} is gone")
        if data.get("user") and data["user"] != user:
            # Single-use: a pod once labelled for someone is never anyone else's, even
            # when Redis was flushed between the Lua claim and this label.
            raise Conflict(f"pod {pod_id} is already claimed by someone else")
        data |= {"user": user, "slug": slug, "claimed_at": time.time()}
        self._write(data)

    def outputs_path(self, slug: str) -> str:
        # The base is resolved once per spec (resolving stats every component, in the
        # event loop); a slug is one safe path component, never a link we made.
        if self._outputs[0] != self.spec.outputs:
            self._outputs = (self.spec.outputs, Path(self.spec.outputs).resolve())
        return str(self._outputs[1] / slug)

    async def stop_all(self) -> None:
        """Stop every pod (demo exit): the caller ends their claims first."""
        if self._in_flight:  # let pods being started get their records, then stop them too
            await asyncio.wait(set(self._in_flight), timeout=30)
        await asyncio.gather(*(self.delete(d["id"]) for d in self._all()))

    def update_spec(self, spec: FleetSpec) -> None:
        self.spec = spec
