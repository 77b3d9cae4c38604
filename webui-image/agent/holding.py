"""Images made in the pod, moved onto the outputs volume into the user's folder.

Two layouts share this code:

- **Split** (the pods sdbroker builds): the WebUI container never mounts the
  outputs volume. It saves into a per-pod emptyDir it shares with the agent
  (the "handoff" folder: ``/outputs`` as the WebUI sees it, ``/handoff`` here),
  and the agent, the only container with the volume, moves every settled file
  into ``/outputs/<user-slug>``. Once claimed, the WebUI saves under
  ``<handoff>/<slug>/``, which lands at ``/outputs/<slug>/`` (``strip``).
- **One container** (docker run, older pod templates): the WebUI saves into a
  pod-local holding folder until the claim is seen (the kubelet refreshes
  Downward API files on its own schedule), then into the user's folder; what
  was held is moved in. Only this pod's one user can have made those images
  (single-use pods), so nothing is misattributed.

The handoff folder is written by the WebUI, which runs its user's code, so it
is read as hostile input: a name may be a symlink to another user's images
(resolved in the agent's mount namespace, where the volume is), a folder may be
swapped for a symlink between two calls, a "file" may be a FIFO. So the tree is
walked by directory descriptors (``os.fwalk``, which never follows links), each
file is opened with ``O_NOFOLLOW`` and checked on its descriptor to be a
regular file, the copy is made from that descriptor, and the destination
folders are opened the same way. Links and anything else are left where they
are: they can only ever hurt the WebUI's own user.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

SETTLED = 1.0  # seconds since the last write before a file is moved (it may still be open)
_CHUNK = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# NONBLOCK: opening a FIFO the WebUI left there never hangs us.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PARTIAL = ".sdb-partial-"  # a copy in progress; a dot-name, so the gallery never lists it


def _open_dir(parent: int, name: str, mode: int) -> int:
    """The folder ``name`` under ``parent``, made if missing; a symlink there is refused (ELOOP)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent)
    return os.open(name, _DIR, dir_fd=parent)


def _exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _free(name: str, folder: int) -> str:
    """``name``, or ``stem-1.ext``, ``stem-2.ext``...: a move never overwrites."""
    if not _exists(name, folder):
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension (or a dot-name)
        stem, dot, ext = name, "", ""
    n = 1
    while _exists(candidate := f"{stem}-{n}{dot}{ext}", folder):
        n += 1
    return candidate


def _copy_into(source: int, info: os.stat_result, final: str, folder: int, mode: int) -> None:
    """Copy the open ``source`` into ``folder`` as ``final``, keeping its mtime.

    Written under a partial name first and renamed at the end, so a reader
    (the broker's gallery) never sees half an image.
    """
    partial = f"{_PARTIAL}{os.getpid()}-{time.monotonic_ns()}"
    target = os.open(partial, _NEW, mode, dir_fd=folder)
    try:
        while chunk := os.read(source, _CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    except BaseException:
        os.close(target)
        os.unlink(partial, dir_fd=folder)
        raise
    os.close(target)  # on NFS, close flushes: its error must stop the move
    os.rename(partial, final, src_dir_fd=folder, dst_dir_fd=folder)


def move_tree(
    holding: Path, folder: Path, settled: float = SETTLED, strip: str = "", mode: int = 0o775
) -> int:
    """Move every settled regular file under ``holding`` into ``folder``; returns how many.

    Called on every poll while claimed, so a file still being written now is
    simply moved on a later pass. ``strip``: a first-level folder of that name
    is merged into ``folder`` itself. ``folder``'s parent must exist; ``folder``
    is made (``mode``) if missing, and refused if it is a symlink.
    """
    try:
        top = os.open(holding, _DIR)
    except FileNotFoundError:
        return 0
    try:
        with _Destination(folder, mode) as dest:
            return _move_all(top, dest, settled, strip)
    finally:
        os.close(top)


def _move_all(top: int, dest: _Destination, settled: float, strip: str) -> int:
    moved, now = 0, time.time()
    for where, _dirs, names, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
        parts = [p for p in where.split("/") if p not in ("", ".")]
        if strip and parts[:1] == [strip]:
            parts = parts[1:]
        # Removing a file needs write access to its folder; one the WebUI's user
        # made unwritable is skipped whole, instead of copied again on every poll.
        if names and not os.access(".", os.W_OK | os.X_OK, dir_fd=dir_fd):
            continue
        for name in names:
            moved += _move_one(name, dir_fd, parts, dest, now - settled)
    return moved


def _move_one(name: str, dir_fd: int, parts: list[str], dest: _Destination, before: float) -> int:
    try:
        source = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:  # a symlink (ELOOP), or gone meanwhile: not ours to move
        return 0
    try:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode) or info.st_mtime > before:
            return 0
        folder = dest.folder(parts)
        copy = _free(name, folder)
        if len(os.fsencode(copy)) > 255:
            return 0  # a name too long to number: stays with the WebUI (its own doing)
        _copy_into(source, info, copy, folder, dest.mode & 0o666)
    finally:
        os.close(source)
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # the WebUI removed it meanwhile; the copy stays
    except PermissionError:  # its folder turned unwritable since the check: try next pass
        os.unlink(copy, dir_fd=folder)
        return 0
    return 1


class _Destination:
    """The user's folder and the folders under it, opened once per pass and without links."""

    def __init__(self, folder: Path, mode: int) -> None:
        self.path = folder
        self.mode = mode
        self._fds: dict[tuple[str, ...], int] = {}

    def __enter__(self) -> _Destination:
        parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._fds[()] = _open_dir(parent, self.path.name, self.mode)
        finally:
            os.close(parent)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def folder(self, parts: list[str]) -> int:
        key: tuple[str, ...] = ()
        for part in parts:
            parent, key = self._fds[key], (*key, part)
            if key not in self._fds:
                self._fds[key] = _open_dir(parent, part, self.mode)
        return self._fds[key]
