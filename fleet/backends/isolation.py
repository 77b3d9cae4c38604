"""How the local backend keeps a WebUI from its neighbours and from the broker.

A WebUI runs its users' code (extensions, custom nodes), so each one is
treated as an attacker. Two mechanisms, each used when this machine allows:

- its own uid (the broker runs as root): a fresh uid per pod, never reused,
  so a WebUI can read no file of the broker's (the data dir is private) and
  no other user's outputs (each user's folder is 0700, owned by the uid of
  the pod that serves them now);
- a bubblewrap sandbox (`bwrap` installed): a network of its own with only
  its own loopback (no broker, no Redis, no other WebUI, no metadata server),
  its own process list, a private /tmp, the file system read-only but for
  its own home and its user's outputs, the broker's data dir hidden. The
  broker reaches the WebUI through relay.py.

Whatever else holds, the environment is scrubbed: a WebUI gets an allow-list
of variables plus its profile's `local.env`, never an SDB_* secret.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError

#: A fresh uid (and gid) per pod, counted up from here and never reused: far above
#: login users, systemd's dynamic users and the usual /etc/subuid ranges.
UID_BASE = 2_100_000_000
UID_SPAN = 100_000_000
#: Variables a WebUI may inherit from the broker: locale, time, search paths and
#: GPU runtime settings. Everything else (SDB_* above all) stays behind.
ENV_ALLOWED = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH",
     "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "PYTORCH_CUDA_ALLOC_CONF",
     "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GRADIO_ANALYTICS_ENABLED"}
)  # fmt: skip
ENV_ALLOWED_PREFIXES = ("LC_",)
RELAY = Path(__file__).with_name("relay.py")
SETPRIV = "/usr/bin/setpriv"  # util-linux: on every Debian


@dataclass(frozen=True, slots=True)
class Isolation:
    """What a profile's WebUIs get on this machine (see `decide`)."""

    own_uid: bool
    sandbox: str | None  # the bwrap binary, or None: no sandbox
    note: str = ""  # why something this machine could do is not done

    def describe(self) -> str:
        """What holds, in a line for the start-up log and the docs' table."""
        if self.own_uid and self.sandbox:
            return "own uid and sandbox: no broker files, no other user's outputs, no network"
        if self.sandbox:
            what = (
                "sandbox without own uid: no network, no data dir, no broker home, but "
                "every user's outputs are readable"
            )
        elif self.own_uid:
            what = (
                "own uid without sandbox (install bubblewrap): no broker files, no other "
                "user's outputs, but loopback ports (other WebUIs, the broker, a Redis on "
                "TCP) are reachable"
            )
        else:
            what = "none: the WebUI runs as the broker, in its network (trusted WebUIs only)"
        return f"{what} ({self.note})" if self.note else what

    @property
    def complete(self) -> bool:
        return self.own_uid and self.sandbox is not None


def decide(setting: str, profile: str, needs: list[Path]) -> Isolation:
    """`auto`: all this machine allows; `strict`: both or refuse; `none`: neither.

    An own uid needs root, and, without a sandbox to show them, every path in
    `needs` (the interpreter, the data dir, the outputs) reachable by others.
    """
    if setting == "none":
        return Isolation(False, None)  # chosen: the log and docs say what it means
    root = os.geteuid() == 0
    sandbox, note = _working_bwrap(root)
    if not root:
        note = "; ".join(filter(None, ["the broker is not root", note]))
    blocked = (
        None if sandbox or not root else next(filter(None, map(reachable_by_others, needs)), None)
    )
    if blocked:
        note = f"{blocked} is closed to other users"
    found = Isolation(own_uid=root and not blocked, sandbox=sandbox, note=note)
    if setting == "strict" and not found.complete:
        raise BackendError(
            f"profile {profile}: isolation: strict needs the broker to run as root with "
            f"bubblewrap installed (apt-get install bubblewrap); here: {found.describe()}"
        )
    return found


def decide_for(
    setting: str, profile: str, command: list[str], data_dir: Path, outputs: str
) -> Isolation:
    """`decide` for a local profile: what its pods need reachable without a sandbox
    is their interpreter (a leading `python` is the broker's), the data dir
    (for their {home}) and the outputs."""
    exe = sys.executable if command[0] in ("python", "python3") else command[0]
    needs = [Path(shutil.which(exe) or exe), Path(sys.executable), data_dir, Path(outputs)]
    return decide(setting, profile, needs)


@functools.cache
def _working_bwrap(root: bool) -> tuple[str | None, str]:
    """bwrap, once seen to make the namespaces a sandbox needs (a container's seccomp
    profile, or a kernel without unprivileged user namespaces, may refuse them)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, ""
    # No --unshare-net here: a new network namespace waits for the kernel to finish
    # tearing down old ones (net_mutex), which took 19 s beside a fleet of pods being
    # replaced; the probe would hold up the broker's start. A pid namespace (and, not
    # as root, a user namespace) shows bwrap works here; a pod's own netns is made at
    # its start, where a failure is a failed pod with bwrap's message in its log.
    own = ["--unshare-pid"] if root else ["--unshare-user", "--unshare-pid"]
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", *own, "true"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap does not run here: {exc}"
    if done.returncode != 0:
        return None, f"bwrap cannot make a sandbox here: {done.stderr.strip()[:200]}"
    return bwrap, ""


def pod_env(profile_env: dict[str, str], pod_id: str, home: str) -> dict[str, str]:
    """The WebUI's environment: the allow-list, its home, then the admin's `local.env`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=home, TMPDIR="/tmp", USER="webui", LOGNAME="webui")
    env.update(profile_env)
    env["SDB_POD_ID"] = pod_id
    return env


def next_uid(counter: Path) -> int:
    """A uid no pod had before: a counter in the data dir, locked across brokers."""
    fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).strip()
        n = int(raw) + 1 if raw.isdigit() else 0
        if n >= UID_SPAN:
            raise BackendError(f"{counter}: every uid of the pod range is used")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(n).encode(), 0)
        return UID_BASE + n
    finally:
        os.close(fd)


def is_pod_uid(uid: int) -> bool:
    return UID_BASE <= uid < UID_BASE + UID_SPAN


def make_home(path: Path, uid: int | None) -> None:
    """The pod's private, writable folder (`{home}`): its own, 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=False)
    if uid is not None:
        os.chown(path, uid, uid)


def sandbox_argv(
    bwrap: str,
    command: list[str],
    *,
    port: int,
    fd: int,
    uid: int | None,
    hidden: list[str],
    visible: list[str],
    writable: list[str],
    cwd: str | None,
    python: str = sys.executable,
) -> list[str]:
    """bwrap around relay.py around the WebUI command.

    `fd` is the listening socket the broker made for the pod's port, which `python`
    (any Python 3 the pod's uid may run) hands in through relay.py.
    The whole file system read-only (permissions still apply), then a private
    /tmp, /proc and /dev, the hidden folders (the data dir, the broker's home)
    under empty tmpfs, and on top, parents first: what the WebUI must still
    see (its interpreter, the paths its command names), read-only, and its
    own home and its user's outputs folder, writable. No --die-with-parent:
    a pod outlives a broker restart and is adopted again.
    """
    # /tmp as /tmp is (1777): as root, a tmpfs is root's 0755, and the pod's uid could
    # write no temp file (gradio's uploads). `--perms` before `--tmpfs`: bwrap 0.8.0.
    args = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp"]  # fmt: skip
    for device in sorted(Path("/dev").glob("nvidia*")):  # the GPUs, where there are any
        args += ["--dev-bind", str(device), str(device)]
    emptied = ["/tmp", *sorted(hidden, key=lambda p: p.count("/"))]
    for path in emptied[1:]:
        args += ["--tmpfs", path]
    binds = {path: "--ro-bind" for path in visible} | {path: "--bind" for path in writable}
    made: set[str] = set()
    for path in sorted(binds, key=lambda p: (p.count("/"), p)):
        # bwrap would make a bind's missing parents 0700 in an emptied folder, closed
        # to the pod's uid: make them 0755 first (they hold nothing but mount points).
        for parent in reversed(Path(path).parents):
            folder = str(parent)
            under = [r for r in [*emptied, *binds] if folder.startswith(r.rstrip("/") + "/")]
            if under and max(under, key=len) in emptied and folder not in made | set(binds):
                made.add(folder)
                args += ["--perms", "0755", "--dir", folder]
        args += [binds[path], path, path]
    if cwd:
        args += ["--chdir", cwd]
    relay = [python, "-I", "-S", str(RELAY), "--fd", str(fd), "--port", str(port)]
    if uid is None:  # not root: bwrap builds it all in a user namespace of our own uid
        return [*args, "--unshare-all", "--hostname", "webui", "--", *relay, "--", *command]
    # Root: bwrap builds the sandbox with root's reach (so it may show paths no one
    # else may open, like a Python under /root), then setpriv drops to the pod's uid
    # with no capability left. Without it bwrap would leave root its capabilities.
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                  "--unshare-cgroup-try", "--hostname", "webui"]  # fmt: skip
    drop = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    caps = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return [*args, *namespaces, *caps, "--", *drop, *relay, "--", *command]


def hidden_paths(data_dir: Path) -> list[str]:
    """What a sandbox covers: the broker's data dir (secret, records, Redis socket,
    logs) and its user's home (keys, tokens, shell history), where there is one."""
    hidden = [str(data_dir)]
    home = os.path.expanduser("~")
    if home not in ("/", "") and os.path.isdir(home):
        hidden.append(os.path.realpath(home))
    return hidden


def named_paths(command: list[str], cwd: str | None) -> list[str]:
    """Existing paths the WebUI's command line names (`/x`, `--flag=/x`; a file's folder),
    its cwd, and
    the broker's Python (`python` in a command is the broker's interpreter): what a
    sandbox must show although they may lie under /tmp or a hidden home."""
    found = {sys.prefix, sys.base_prefix, str(RELAY.parent)}
    for arg in [*command, cwd or ""]:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if value.startswith("/") and os.path.exists(value):
            real = os.path.realpath(value)
            # A script imports its siblings (its folder is sys.path[0]): show the folder.
            found.add(real if os.path.isdir(real) else os.path.dirname(real))
    return sorted(found)


def give_outputs(folder: str, uid: int | None) -> None:
    """Make the user's folder the pod's alone: owned by its uid, 0700, and what earlier
    pods of this user left there handed over too, so the WebUI sees and extends it.

    Walks by directory descriptors and never follows a link, and re-owns only what a
    pod uid owns: a link or hard link planted by an earlier WebUI gains it nothing.
    """
    if uid is None:
        return
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(top, uid, uid)
        os.fchmod(top, 0o700)
    finally:
        os.close(top)
    for _root, dirs, files, dir_fd in os.fwalk(folder, follow_symlinks=False):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) or st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    continue
                if is_pod_uid(st.st_uid) and st.st_uid != uid:
                    os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)


def reachable_by_others(path: Path) -> str | None:
    """None when a user other than the broker's can reach PATH; else the folder in the way."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        with contextlib.suppress(FileNotFoundError):
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return str(folder)
    return None
