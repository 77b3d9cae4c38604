"""The local backend's records on disk: a JSON file per pod, a claim file beside it.

Shared by every broker on the machine (they share the data dir) and by tools
and tests that read the truth from outside a broker. A record is written by the
backend (local.py); a claim is written and read here, under the lock that keeps
it whole and lets only one user ever hold a pod (write_claim).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BackendError, Conflict, PodGone

EXITED = ("Z", "X", "x")  # /proc states of a process that has ended (zombie, dead)
CLAIM_SUFFIX = (
    ".claim"  # a pod's claim: a file beside its record, empty until claimed, then the user
)
CLAIM_MAX = 64 * 1024  # bytes of a claim file read: a user's JSON name, far below


class LockHeld(Exception):
    """A claim file's lock is held by someone else: try again where waiting is allowed."""


def proc_stat(pid: int) -> tuple[str, bytes] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat; None without one."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)  # a few hundred bytes; os.* skips io's buffered stack
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = text[text.rfind(b")") + 2 :].split(b" ", 20)  # the name may hold ") "
    if len(fields) < 20:
        return None
    return fields[0].decode("ascii", "replace"), fields[19]


def open_claim(path: str, flags: int) -> int:
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise BackendError(f"cannot open the claim file {path}: {exc}") from exc


def read_pods(data_dir: Path) -> list[dict[str, Any]]:
    """Every pod's record with its claim, as kept under a broker's data dir: for tools
    and tests that look at the truth from outside a broker."""
    records_dir = Path(data_dir) / "pods"
    found = (read_pod(records_dir, p.stem) for p in sorted(records_dir.glob("*.json")))
    return [data for data in found if data is not None]


def read_pod(records_dir: Path, pod_id: str) -> dict[str, Any] | None:
    """The pod's record with its claim, if any (records of older versions carry it inside)."""
    data = read_record(records_dir, pod_id)
    if data is None:
        return None
    claim = read_claim(f"{records_dir}/{pod_id}{CLAIM_SUFFIX}")
    return data | claim if claim else data


class RecordScan:
    """Every record of a records dir, read again only when its files changed: the
    controller's pass over hundreds of pods runs in the event loop (local.py observe)."""

    def __init__(self, records_dir: Path) -> None:
        self.records_dir = records_dir
        #: file name -> ((inode, mtime, size, claim size), record): what each read last time.
        self.parsed: dict[str, tuple[tuple[int, int, int, int], dict[str, Any]]] = {}

    def each(self) -> Iterator[dict[str, Any]]:
        """Every record with its claim, by name. A record unchanged since the last pass
        (same inode, mtime and size: a record is only ever replaced whole) whose claim
        file has the same size (written once, when empty) is not read and parsed again,
        so the controller's pass costs two stats per pod. Read the dicts, never change
        them. The cache is kept when the iteration is run to its end."""
        try:
            with os.scandir(self.records_dir) as it:
                records, claims = [], {}
                for e in it:
                    if e.name.endswith(".json"):
                        records.append(e)
                    elif e.name.endswith(CLAIM_SUFFIX):
                        claims[e.name[: -len(CLAIM_SUFFIX)]] = e
        except FileNotFoundError:
            return
        records.sort(key=lambda e: e.name)
        known, parsed = self.parsed, {}
        for entry in records:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            pod_id = entry.name[:-5]
            claim = claims.get(pod_id)
            try:  # a claim is written once into its empty file: its size tells
                held = claim.stat().st_size if claim is not None else -1
            except FileNotFoundError:
                held = -1
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size, held)
            hit = known.get(entry.name)
            data = (
                hit[1]
                if hit is not None and hit[0] == stamp
                else read_pod(self.records_dir, pod_id)
            )
            if data:
                parsed[entry.name] = (stamp, data)
                yield data
        self.parsed = parsed


def read_record(records_dir: Path, pod_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((records_dir / f"{pod_id}.json").read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def claim_text(user: str, groups: str) -> bytes:
    """A claim file's content: the user's JSON name, then (if any) a line with their groups
    (model.record_groups). JSON escapes a newline, so the first line is always the name."""
    return json.dumps(user).encode() + (b"\n" + groups.encode() if groups else b"")


def claim_user(held: bytes) -> bytes:
    """The first line of a claim file (the user's JSON name), to compare with another's."""
    return held.split(b"\n", 1)[0]


def read_claim(path: str) -> dict[str, Any] | None:
    """A claim ({user, claimed_at, groups}: the file's JSON lines and its mtime). None when
    unclaimed or unreadable (an unreadable claim still refuses every user in write_claim:
    it is not empty). `groups` is the text as written, checked by whoever reads it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # never half of a claim being written
        raw, claimed_at = os.read(fd, CLAIM_MAX), os.fstat(fd).st_mtime
    except OSError:
        return None
    finally:
        os.close(fd)
    first, _, groups = raw.partition(b"\n")
    try:
        user = json.loads(first) if first else None
    except ValueError:
        return None
    if not isinstance(user, str):
        return None
    return {"user": user, "claimed_at": claimed_at, "groups": groups.decode("utf-8", "replace")}


def write_claim(
    records_dir: Path,
    pod_id: str,
    user: str,
    groups: str,
    alive: Callable[[dict[str, Any]], bool],
    *,
    wait: bool = True,
) -> None:
    """Claim the pod for `user`: its claim file, locked, is written only when empty.

    The lock (flock) holds across processes (brokers share the data dir), so
    there is no read-check-write for two brokers to interleave, and readers
    take it too, never seeing half a claim. A claim already there is fine for
    the same user (binding is idempotent) and a Conflict for anyone else:
    single-use, even when Redis was flushed between the Lua claim and this step.
    `alive` tells whether the record's process still runs (the backend's check);
    without `wait` the lock is only tried, and LockHeld raised when it is held.
    """
    mine = claim_text(user, groups)
    path = f"{records_dir}/{pod_id}{CLAIM_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # a deleted pod, or one started by an older version
        if read_record(records_dir, pod_id) is None:
            raise PodGone(f"pod {pod_id} is gone") from None
        fd = open_claim(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise BackendError(f"cannot record the claim of pod {pod_id}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld from None
        held = os.pread(fd, CLAIM_MAX, 0)
        if held and claim_user(held) != claim_user(mine):
            raise Conflict(f"pod {pod_id} is already claimed by someone else")
        data = read_record(records_dir, pod_id)
        if data is None or not alive(data):
            raise PodGone(f"pod {pod_id} is gone")
        if data.get("user") and data["user"] != user:  # claimed by an older version
            raise Conflict(f"pod {pod_id} is already claimed by someone else")
        if not held:
            os.pwrite(fd, mine, 0)
    except OSError as exc:
        raise BackendError(f"cannot record the claim of pod {pod_id}: {exc}") from exc
    finally:
        os.close(fd)  # and the lock with it
