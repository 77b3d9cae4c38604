"""Reading one user's outputs folder without ever leaving it (the gallery's file side).

The folder is ``<root>/<slug>`` on the outputs volume. Its files were written
by WebUIs, which run their users' code, and before the agent-only layout
every WebUI could write anywhere on the volume: a name in anyone's folder may
be a symlink to someone else's images, or the user's folder itself a symlink.
So nothing here resolves a path: the folder and every folder below it are
opened one component at a time, relative to the previous descriptor, with
``O_NOFOLLOW``; a file is opened the same way and checked on its descriptor
to be a regular file. ``..`` and ``.``-names never reach ``open`` at all
(``valid_parts``). Plain blocking calls: the caller runs them in a thread.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

#: What the gallery shows and serves, by extension, with the type it is sent as.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".avif": "image/avif",
}
MAX_SCAN = 20_000  # names looked at per listing: a folder of millions must not pin a thread
MAX_BYTES = 64 * 1024 * 1024  # one image read into memory; a generated PNG is a few MB
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs


class RootMissing(OSError):
    """The outputs volume is not where the backend says: the broker has no mount of it."""


@dataclass(frozen=True)
class Image:
    path: str  # relative to the user's folder, "/"-separated, every part valid_parts-clean
    mtime: float
    size: int


def image_type(name: str) -> str | None:
    return IMAGE_TYPES.get(os.path.splitext(name)[1].lower())


def valid_parts(parts: list[str]) -> bool:
    """Path parts that can only name something inside the folder: no ``..``, no ``.``-names.

    Also UTF-8 names only: a WebUI may save under any bytes, which no URL could carry back.
    """
    return bool(parts) and all(_valid_part(p) for p in parts)


def _valid_part(part: str) -> bool:
    try:
        size = len(part.encode())
    except UnicodeEncodeError:  # undecodable bytes, kept by os as surrogates
        return False
    return 0 < size <= 255 and not part.startswith(".") and "\x00" not in part


def _open_folder(root: str, slug: str) -> int:
    """The user's folder; FileNotFoundError while they have none, ELOOP if it is a link."""
    try:
        parent = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise RootMissing(exc.errno, f"no outputs folder at {root}") from exc
    try:
        return os.open(slug, _DIR, dir_fd=parent)
    finally:
        os.close(parent)


def list_images(root: str, slug: str, limit: int = MAX_SCAN) -> tuple[list[Image], bool]:
    """The images in ``root/slug``, newest first, and whether ``limit`` cut the walk short."""
    try:
        folder = _open_folder(root, slug)
    except FileNotFoundError:
        return [], False  # no image made yet
    images: list[Image] = []
    seen = 0
    try:
        # fwalk never follows a link, to a folder or a file; hidden folders are skipped.
        for where, dirs, names, dir_fd in os.fwalk(".", dir_fd=folder, follow_symlinks=False):
            dirs[:] = sorted(d for d in dirs if valid_parts([d]))
            prefix = where[2:]  # "./a/b" -> "a/b"
            for name in names:
                seen += 1
                if seen > limit:
                    return _newest_first(images), True
                if not (valid_parts([name]) and image_type(name)):
                    continue
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                if stat.S_ISREG(info.st_mode):
                    path = f"{prefix}/{name}" if prefix else name
                    images.append(Image(path, info.st_mtime, info.st_size))
    finally:
        os.close(folder)
    return _newest_first(images), False


def _newest_first(images: list[Image]) -> list[Image]:
    return sorted(images, key=lambda i: (-i.mtime, i.path))


def read_image(root: str, slug: str, parts: list[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of ``root/slug/<parts>``; OSError (FileNotFoundError...) if it is no image there.

    ``parts`` must have passed ``valid_parts``. A link anywhere on the way,
    a folder where the file should be, or anything but a regular file is refused.
    """
    if not (valid_parts(parts) and image_type(parts[-1])):
        raise FileNotFoundError(f"not an image name: {'/'.join(parts)!r}")
    fds = [_open_folder(root, slug)]
    try:
        for part in parts[:-1]:
            fds.append(os.open(part, _DIR, dir_fd=fds[-1]))
        fds.append(os.open(parts[-1], _FILE, dir_fd=fds[-1]))
        info = os.fstat(fds[-1])
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(f"not a regular file: {'/'.join(parts)!r}")
        if info.st_size > MAX_BYTES:
            raise FileNotFoundError(f"larger than {MAX_BYTES} bytes: {'/'.join(parts)!r}")
        chunks, left = [], info.st_size
        while left > 0 and (chunk := os.read(fds[-1], min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), info
    finally:
        for fd in fds:
            os.close(fd)
