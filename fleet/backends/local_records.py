"""The local backend's records on disk: a JSON file per pod, a claim file beside it.

Shared by every broker on the machine (they share the data dir) and by tools
and tests that read the truth from outside a broker. Written by the backend
(local.py); read here, with the locks that keep a claim whole.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..errors import BackendError

EXITED = ("Z", "X", "x")  # /proc states of a process that has ended (zombie, dead)
CLAIM_SUFFIX = (
    ".claim"  # a pod's claim: a file beside its record, empty until claimed, then the user
)
CLAIM_MAX = 64 * 1024  # bytes of a claim file read: a user's JSON name, far below


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
    unclaimed or unreadable (an unreadable claim still refuses every user in _mark_claimed:
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
