"""What is kept of a person's WebUI settings, and the files it is kept in.

Half of one implementation with ``webui_settings.py`` (read its docstring): the same
file in ``fleet/`` and ``webui-image/agent/``, byte for byte. Validation (``check``, the
one gate in and out) and the folders: ``<user folder>/.webui-settings/<kind>/``, written
by the trusted side only, and the WebUI's own folder (``--styles-file``,
``--ui-config-file``), read as hostile input.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import stat
import time
from typing import Any

log = logging.getLogger(__name__)

FOLDER = ".webui-settings"
FILE_MAX = 1 << 20  # one file
TOTAL_MAX = 8 << 20  # one kind, all files
FILES_MAX = 200  # one kind
NAME_MAX = 255  # bytes of one file name
KINDS = ("a1111", "comfyui")
A1111_FILES = ("config.json", "styles.csv", "ui-config.json")
COMFY_SETTINGS = "comfy.settings.json"
WORKFLOWS = "workflows/"
#: A1111 options the broker (or the agent) owns, never saved nor restored: every
#: ``outdir_*`` (set at each claim to the user's folder), options naming a path on the
#: pod's disk (``temp_dir``, ``font``, ``restore_config_state_file``), the loaded model
#: (restoring it would load a checkpoint during the claim, and it may not exist on the
#: next pod's models volume: ``set_config`` then refuses the whole POST), and the
#: admin's extension switches.
OWNED_OPTIONS = frozenset(
    {
        "temp_dir",
        "font",
        "restore_config_state_file",
        "sd_model_checkpoint",
        "sd_checkpoint_hash",
        "sd_vae",
        "sd_unet",
        "disabled_extensions",
        "disable_all_extensions",
    }
)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SettingsError(ValueError):
    """What a pod answered (or a file held) is not a setting we keep."""


def owned(key: str) -> bool:
    return key.startswith("outdir_") or key in OWNED_OPTIONS


def safe_name(name: str) -> str:
    """A workflow's file name as ComfyUI lists it: one component, no dot first."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX
        or any(ord(c) < 32 for c in name)
    ):
        raise SettingsError(f"refused file name {name[:80]!r}")
    return name


def check(name: str, data: bytes) -> bytes:
    """The canonical bytes kept for NAME, or SettingsError: the one gate in and out."""
    if len(data) > FILE_MAX:
        raise SettingsError(f"{name}: {len(data)} bytes, over {FILE_MAX}")
    if name == "styles.csv":
        return styles_csv(parse_styles_csv(data))
    if name.startswith(WORKFLOWS):
        safe_name(name[len(WORKFLOWS) :])
    elif name not in (*A1111_FILES, COMFY_SETTINGS):
        raise SettingsError(f"refused file name {name[:80]!r}")
    value = parse_json(name, data)
    if not isinstance(value, dict):
        raise SettingsError(f"{name}: not a JSON object")
    if name == "config.json":
        value = {k: v for k, v in value.items() if not owned(k)}
    out = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    if len(out) > FILE_MAX:
        raise SettingsError(f"{name}: {len(out)} bytes, over {FILE_MAX}")
    return out


def parse_json(what: str, data: bytes) -> Any:
    """JSON from a pod: SettingsError for anything else, deep nesting too (RecursionError,
    which is no ValueError, would otherwise end the agent's loop or a claim)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SettingsError(f"{what}: not JSON ({type(exc).__name__})") from None


def styles_csv(styles: list[dict[str, str]]) -> bytes:
    """A1111's styles.csv (modules/styles.py ``StyleDatabase.save_styles``: these columns)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["name", "prompt", "negative_prompt"])
    writer.writeheader()
    writer.writerows(styles)
    return text.getvalue().encode()


def parse_styles_csv(data: bytes) -> list[dict[str, str]]:
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SettingsError(f"styles.csv: {exc}") from None
    return check_styles(rows)


def check_styles(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) > 10_000:
        raise SettingsError("styles: not a list of styles")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise SettingsError("styles: an entry is not an object")
        row = {k: item.get(k) or "" for k in ("name", "prompt", "negative_prompt")}
        if not all(isinstance(v, str) for v in row.values()) or not row["name"]:
            raise SettingsError("styles: an entry is not three strings with a name")
        out.append(row)
    return out


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


# ----- the files: the user's folder, and the WebUI's own folder -----


def _open_dir(parent: int, name: str, make: bool) -> int:
    if make:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
    return os.open(name, _DIR, dir_fd=parent)


def _read(folder: int, name: str, owner: int | None) -> bytes | None:
    """A regular file of at most FILE_MAX bytes (of OWNER, when given), never through a link."""
    try:
        fd = os.open(name, _READ, dir_fd=folder)
    except (FileNotFoundError, OSError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > FILE_MAX:
            return None
        if owner is not None and info.st_uid != owner:
            return None
        data = os.read(fd, FILE_MAX + 1)
        return data if len(data) <= FILE_MAX else None
    finally:
        os.close(fd)


def _write(folder: int, name: str, data: bytes, mode: int) -> None:
    """NAME in FOLDER, replaced whole: a temporary dot-name renamed over it (a link there is
    replaced, never followed). As root, the file goes to the folder's owner (the WebUI's
    own folder: it rewrites styles.csv itself)."""
    tmp = f".sdb-settings-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(tmp, _NEW, mode, dir_fd=folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if os.geteuid() == 0:
            info = os.fstat(folder)
            os.fchown(fd, info.st_uid, info.st_gid)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=folder)
        raise
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)


def _remove(folder: int, name: str) -> bool:
    """Unlink NAME in FOLDER when it is a regular file of ours with a safe name (never
    what a link points to: the link itself is not ours to judge, so it stays)."""
    try:
        safe_name(name)
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except (SettingsError, OSError):
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)
    return True


class Store:
    """``<outputs root>/<slug>/.webui-settings/<kind>/``: written by the trusted side only.

    The user's folder may be writable by their pod (local backend, one uid per pod), so
    each folder is opened without following links and must be ours; a file not ours
    (planted by a pod) is never read back.
    """

    def __init__(self, outputs_root: str, slug: str, kind: str) -> None:
        if kind not in KINDS or not slug or "/" in slug or slug.startswith("."):
            raise SettingsError(f"no settings folder for {slug!r} ({kind})")
        self.root, self.slug, self.kind = outputs_root, slug, kind

    def _open(self, make: bool) -> tuple[int, int | None]:
        """(the kind's folder, its workflows folder or None); OSError when absent or not ours."""
        fds: list[int] = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        try:
            for part in (self.slug, FOLDER, self.kind):
                fds.append(_open_dir(fds[-1], part, make and part != self.slug))
            for fd in fds[2:]:
                info = os.fstat(fd)
                if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                    raise PermissionError(f"{FOLDER} of {self.slug} is not ours")
            flows = None
            with contextlib.suppress(FileNotFoundError):
                flows = _open_dir(fds[-1], WORKFLOWS[:-1], False)  # made when first needed
            return fds.pop(), flows
        finally:
            for fd in fds:
                os.close(fd)

    def holds(self, *names: str) -> bool:
        """Whether one of NAMES is kept here, a regular file reached without a link (a hint
        for the person's page; its owner is not checked: the broker may only read the
        volume the agent writes)."""
        fds: list[int] = []
        try:
            fds.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for part in (self.slug, FOLDER, self.kind):
                fds.append(_open_dir(fds[-1], part, False))
            for name in names:
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_mode):
                        return True
            return False
        except OSError:
            return False
        finally:
            for fd in fds:
                os.close(fd)

    def load(self) -> dict[str, bytes]:
        """What was kept, each file checked again; nothing when there is no folder."""
        try:
            top, flows = self._open(make=False)
        except FileNotFoundError:
            return {}
        out: dict[str, bytes] = {}
        try:
            for folder, prefix in ((top, ""), (flows, WORKFLOWS)):
                if folder is None:
                    continue
                for name in sorted(os.listdir(folder))[: FILES_MAX + 2]:
                    data = _read(folder, name, os.geteuid())
                    if data is None or name.startswith("."):
                        continue
                    with contextlib.suppress(SettingsError):
                        out[prefix + name] = check(prefix + name, data)
        finally:
            os.close(top)
            if flows is not None:
                os.close(flows)
        return out

    def save(self, files: dict[str, bytes], mirror: bool = False) -> int:
        """Keep FILES (each already through `check`); returns how many changed. Within the
        caps, in name order; a file over one keeps its last good copy (a warning).
        MIRROR: FILES holds every workflow the WebUI has (a complete fetch after a complete
        restore), so a kept workflow absent from it was deleted there and is removed here."""
        kept = self.load()
        gone = [n for n in kept if n.startswith(WORKFLOWS) and n not in files] if mirror else []
        for name in gone:
            del kept[name]
        total = sum(len(v) for k, v in kept.items() if k not in files)
        count = len(set(kept) - set(files))
        changed = 0
        top, flows = self._open(make=True)
        try:
            if flows is not None:
                changed += sum(_remove(flows, n[len(WORKFLOWS) :]) for n in gone)
            for name in sorted(files):
                data = files[name]
                if count + 1 > FILES_MAX or total + len(data) > TOTAL_MAX:
                    log.warning("settings of %s: %s over the caps; last copy kept", self.slug, name)
                    total += len(kept.get(name, b""))
                    count += name in kept
                    continue
                count, total = count + 1, total + len(data)
                if kept.get(name) == data:
                    continue
                if name.startswith(WORKFLOWS):
                    if flows is None:
                        flows = _open_dir(top, WORKFLOWS[:-1], True)
                    _write(flows, name[len(WORKFLOWS) :], data, 0o600)
                else:
                    _write(top, name, data, 0o600)
                changed += 1
        finally:
            os.close(top)
            if flows is not None:
                os.close(flows)
        return changed


def read_webui_file(webui_dir: str, name: str) -> bytes | None:
    """A file the WebUI wrote in its own folder (hostile: no link, a regular file, capped)."""
    try:
        folder = os.open(webui_dir, _DIR)
    except OSError:
        return None
    try:
        return _read(folder, name, None)
    finally:
        os.close(folder)


def write_webui_file(webui_dir: str, name: str, data: bytes) -> None:
    folder = os.open(webui_dir, _DIR)
    try:
        _write(folder, name, data, 0o664)
    finally:
        os.close(folder)
