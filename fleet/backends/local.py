"""The `local` backend: one WebUI process per pod on this machine.

Each pod is a process group of its own (it outlives a broker restart and is
adopted again), listening on a free loopback port, logging to a file per pod.
Its record is a JSON file under the data dir, written once when the pod
starts; its claim is a small file beside it, empty until the pod is claimed
(see `_mark_claimed`). Those, not Redis, are the truth the index is rebuilt from.
Beside it: local_records.py (the files, their scan, the claim's locked write),
local_process.py (a pod's port, start, liveness and stop) and local_settings.py
(people's WebUI settings kept across pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from ..errors import BackendError
from ..model import Phase, PodRecord, record_groups_of
from ..spec import FleetSpec, Profile
from .base import TEMPLATE, Backend, OnChange, template_hash
from .isolation import (
    Isolation,
    decide_for,
    give_outputs,
    hidden_paths,
    make_home,
    named_paths,
    next_uid,
    pod_env,
    sandbox_argv,
)
from .local_process import Liveness, LoopbackPorts, spawn, stop_group
from .local_records import (
    CLAIM_SUFFIX,
    LockHeld,
    RecordScan,
    open_claim,
    read_pod,
    read_record,
    write_claim,
)
from .local_settings import LocalSettings, OnSettings, keep_claimed, last_save

log = logging.getLogger(__name__)
OBSERVE_SLICE = 50  # pods read between two turns of the event loop (about a millisecond)


class LocalBackend(Backend):
    name = "local"
    probes_readiness = True

    def __init__(
        self,
        spec: FleetSpec,
        data_dir: Path,
        *,
        on_change: OnChange = None,
        on_settings: OnSettings | None = None,
    ) -> None:
        super().__init__(spec, on_change=on_change)
        self.data_dir = Path(data_dir).resolve()
        self.records_dir = self.data_dir / "pods"
        self.logs_dir = self.data_dir / "logs"
        self.homes_dir = self.data_dir / "homes"  # each pod's {home}, its own uid's
        self._isolation: dict[str, Isolation] = {}  # per profile, decided once
        self._claimed_uid: dict[str, int] = {}  # slug -> uid of the pod just claimed for it
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._alive = Liveness(self._children)  # whether a record's process still runs
        self._ports = LoopbackPorts()
        self._creating = asyncio.Lock()  # a slot is chosen and recorded before the next is chosen
        self._in_flight: set[asyncio.Task[PodRecord]] = set()
        self._outputs: tuple[str, Path] = ("", Path())  # (spec.outputs, resolved)
        self._scan = RecordScan(self.records_dir)  # what _all read last time
        #: People's WebUI settings, restored at each claim and saved while claimed.
        self.settings = LocalSettings(on_settings)

    async def start(self) -> None:
        # A thread: folders made, and each profile's isolation probed (bwrap is run once).
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        for folder in (self.records_dir, self.logs_dir, self.homes_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for profile in self.spec.profiles:
            if profile.local is not None:
                self.isolation_of(profile)  # said once, at start, in the log

    def template_of(self, profile: Profile) -> str:
        """What a new WebUI of PROFILE runs: its command, environment, folder and isolation."""
        if profile.local is None:
            return ""
        local = profile.local
        return template_hash([local.command, local.env, local.cwd, local.isolation])

    def isolation_of(self, profile: Profile) -> Isolation:
        """What this profile's WebUIs get here, decided (and logged) once per setting."""
        assert profile.local is not None
        key = f"{profile.name}/{profile.local.isolation}"
        found = self._isolation.get(key)
        if found is None:
            found = self._isolation[key] = decide_for(
                profile.local.isolation, profile.name, profile.local.command,
                self.data_dir, self.spec.outputs,
            )  # fmt: skip
            # `sdbroker serve` says it once for all workers (fleet.isolation_of).
            log.debug("profile %s: WebUI isolation: %s", profile.name, found.describe())
            if found.own_uid:
                # Others may pass through (to their own {home}), never list or read.
                os.chmod(self.data_dir, 0o711)
                os.chmod(self.homes_dir, 0o711)
        return found

    # --- records ------------------------------------------------------------

    def _path(self, pod_id: str) -> Path:
        return self.records_dir / f"{pod_id}.json"

    def _claim_path(self, pod_id: str) -> str:
        return f"{self.records_dir}/{pod_id}{CLAIM_SUFFIX}"

    def _read(self, pod_id: str) -> dict[str, Any] | None:
        return read_pod(self.records_dir, pod_id)

    def _write(self, data: dict[str, Any]) -> None:
        path = self._path(data["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def _all(self) -> list[dict[str, Any]]:
        return list(self._each())

    def _each(self) -> Iterator[dict[str, Any]]:
        """Every record with its claim (local_records.RecordScan: unchanged files are not
        read again); pods gone since are forgotten when the iteration is run to its end."""
        yield from self._scan.each()
        self._alive.keep_only(self._scan.parsed)

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
            groups=record_groups_of(str(data.get("groups") or "")),
            extra={
                "pid": str(data["pid"]),
                "port": str(data["port"]),
                "slot": str(data.get("slot", "")),
                TEMPLATE: str(data.get(TEMPLATE, "")),  # "": made before pods carried one
            },
        )

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
        isolation = self.isolation_of(profile)
        base = self.outputs_path("")
        if isolation.sandbox:  # it is bound into the sandbox: it must be there
            try:
                await asyncio.to_thread(os.makedirs, base, 0o711, True)
            except OSError as exc:
                raise BackendError(f"cannot make the outputs folder {base}: {exc}") from exc
        listener = self._ports.listen()
        port = listener.getsockname()[1]
        slot = self._free_slot(profile)
        # A thread: the counter's lock (flock LOCK_EX) may wait for another broker.
        uid = (
            await asyncio.to_thread(next_uid, self.data_dir / "pod-uids")
            if isolation.own_uid
            else None
        )
        home = self.homes_dir / pod_id
        try:
            make_home(home, uid)
        except OSError as exc:
            listener.close()
            raise BackendError(f"cannot make the home folder {home}: {exc}") from exc
        command = profile.local.argv(port, pod_id, str(home))
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # the broker's interpreter: `python` may not be on PATH
        env = pod_env(profile.local.env, pod_id, str(home))
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot)
        pass_fds: tuple[int, ...] = ()
        if isolation.sandbox:
            command = sandbox_argv(
                isolation.sandbox, command, port=port, fd=listener.fileno(), uid=uid,
                hidden=hidden_paths(self.data_dir),
                visible=named_paths(command, profile.local.cwd),
                writable=[self.outputs_path(""), str(home)], cwd=profile.local.cwd,
            )  # fmt: skip
            pass_fds = (listener.fileno(),)
            listener.set_inheritable(True)
        else:
            listener.close()  # the WebUI binds the port itself, in our network
        log_path = self.logs_dir / f"{pod_id}.log"
        # The pod's empty claim file, made now (before its process: no pod without one) so
        # that claiming it creates no file: making a file (an inode) took up to a
        # millisecond on a busy disk, writing into one ~20 us.
        claim = self._claim_path(pod_id)
        os.close(open_claim(claim, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        try:
            as_uid = None if isolation.sandbox else uid  # a sandbox drops to it itself
            child = await asyncio.to_thread(
                spawn, command, profile.local.cwd, env, log_path, uid=as_uid, pass_fds=pass_fds
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(claim)
            raise BackendError(f"profile {profile.name}: cannot start {command[0]}: {exc}") from exc
        finally:
            listener.close()  # the relay holds its own copy
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
            "uid": uid,
            "home": str(home),
            "isolation": isolation.describe(),
            TEMPLATE: self.template_of(profile),
        }
        self._write(data)
        log.info("started pod %s (pid %s) on port %s", pod_id, child.pid, port)
        return self._record(data)

    async def delete(self, pod_id: str) -> None:
        data = self._read(pod_id)
        if data is None:
            with contextlib.suppress(FileNotFoundError):  # a delete cut short before
                os.unlink(self._claim_path(pod_id))
            return
        grace = 10.0
        with contextlib.suppress(KeyError):
            profile = self.spec.profile(data["profile"])
            if profile.local is not None:
                grace = profile.local.stop_grace
        if self._alive(data):
            await last_save(self.settings, data, self.spec, self.outputs_path)
            await stop_group(int(data["pid"]), grace, self._children)
        await self.settings.forget(pod_id)  # a pod found dead: its save loop ends too
        child = self._children.pop(pod_id, None)
        if child is not None:
            child.poll()
        # The record goes first: a record is never without the claim it had.
        self._path(pod_id).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._claim_path(pod_id))
        # Single-use: nothing of the pod's own is kept for anyone else.
        await asyncio.to_thread(shutil.rmtree, self.homes_dir / pod_id, ignore_errors=True)
        log.info("deleted pod %s", pod_id)

    async def keep_settings(
        self, pod_id: str, addr: str, slug: str, profile: Profile, http: aiohttp.ClientSession
    ) -> None:
        """The pod's own folder ({home}) is where its --styles-file and --ui-config-file are."""
        await keep_claimed(
            self.settings, self.records_dir, pod_id, addr, slug, profile, http, self.outputs_path
        )

    async def close(self) -> None:
        await self.settings.close()

    async def observe(self) -> list[PodRecord]:
        """Every pod, read in the event loop a slice at a time, so that users' requests
        and claims are served between slices. Not in a thread: this is Python work, and
        a thread running it held the GIL against the event loop for the whole pass
        (every turn of the loop waiting up to a switch interval), which stalled the
        claims of a burst far longer than the pass itself."""
        out = []
        for n, data in enumerate(self._each(), 1):
            out.append(self._record(data))
            if n % OBSERVE_SLICE == 0:
                await asyncio.sleep(0)
        return out

    # One pod's file reads and process checks run in a thread: off the claim path,
    # they may wait for a slow disk without holding up users' traffic.

    async def phase_of(self, pod_id: str) -> PodRecord | None:
        data = await asyncio.to_thread(self._read, pod_id)
        return await asyncio.to_thread(self._record, data) if data else None

    async def mark_claimed(self, pod_id: str, user: str, slug: str, groups: str = "") -> None:
        # In the event loop, not a thread: a lock, two small reads, a small write and
        # (for a pod another broker started) a /proc read, some 50 us. A thread's hop
        # cost more than that: with the loop busy it waited for the GIL at each syscall.
        # The lock is only tried there: held (by another broker, for microseconds), the
        # whole step goes to a thread, which waits for it off the loop.
        try:
            self._mark_claimed(pod_id, user, slug, groups, wait=False)
        except LockHeld:
            await asyncio.to_thread(self._mark_claimed, pod_id, user, slug, groups)

    def _mark_claimed(
        self, pod_id: str, user: str, slug: str = "", groups: str = "", *, wait: bool = True
    ) -> None:
        """Claim the pod for `user` (local_records.write_claim: locked, single-use), after
        noting its uid for prepare_outputs. Without `wait`, LockHeld when the lock is held."""
        data = read_record(self.records_dir, pod_id)
        if data is not None and data.get("uid") is not None:
            self._claimed_uid[slug] = int(data["uid"])  # prepare_outputs hands it the folder
        write_claim(self.records_dir, pod_id, user, groups, self._alive, wait=wait)

    def outputs_path(self, slug: str) -> str:
        # The base is resolved once per spec (resolving stats every component, in the
        # event loop); a slug is one safe path component, never a link we made.
        if self._outputs[0] != self.spec.outputs:
            self._outputs = (self.spec.outputs, Path(self.spec.outputs).resolve())
        return str(self._outputs[1] / slug)

    async def prepare_outputs(self, slug: str) -> None:
        """The user's folder, then (own uids) handed to the pod that serves them now."""
        await super().prepare_outputs(slug)
        uid = self._claimed_uid.pop(slug, None)
        if uid is not None:
            base = self.outputs_path("")
            if os.stat(base).st_mode & 0o777 != 0o711:
                os.chmod(base, 0o711)  # through to one's own folder; no listing of others'
            try:
                await asyncio.to_thread(give_outputs, self.outputs_path(slug), uid)
            except OSError as exc:
                raise BackendError(f"cannot hand over {self.outputs_path(slug)}: {exc}") from exc

    async def stop_all(self) -> None:
        """Stop every pod (demo exit): the caller ends their claims first."""
        if self._in_flight:  # let pods being started get their records, then stop them too
            await asyncio.wait(set(self._in_flight), timeout=30)
        await asyncio.gather(*(self.delete(d["id"]) for d in self._all()))

    def update_spec(self, spec: FleetSpec) -> None:
        self.spec = spec
