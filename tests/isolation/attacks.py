"""What hostile code in a WebUI tries: standard library only, so that it runs in any
interpreter a sandbox shows (hostile_webui.py serves it in the stand-in WebUI,
attacker.py in a bare one). Each attack answers "ok: ..." when it worked and
"refused: ..." when it did not.
"""

from __future__ import annotations

import glob
import os
import socket
import urllib.request
from pathlib import Path


def _try(fn, *args) -> str:
    try:
        return f"ok: {fn(*args)}"[:300]
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"[:300]


def _secrets_in_env() -> str:
    found = sorted(k for k in os.environ if k.startswith("SDB_") and k != "SDB_POD_ID")
    if not found:
        raise LookupError("no SDB_* variable but SDB_POD_ID")
    return ", ".join(found)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f"{len(f.read())} bytes of {path}"


def _listdir(path: str) -> str:
    return f"{len(os.listdir(path))} entries in {path}"


def _write(path: str) -> str:
    Path(path).write_text("written by someone else's WebUI")
    return f"wrote {path}"


def _own_tmp() -> str:
    """Not an attack: a WebUI needs a /tmp of its own (gradio's uploads go there)."""
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        return f"wrote {f.name}"


def _redis_ping(address: str) -> str:
    """`host:port` or a unix socket path; PING, as any Redis client would."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(2)
        sock.connect(address)
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=2)
    with sock:
        sock.sendall(b"PING\r\n")
        answer = sock.recv(64)
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        raise ConnectionError(f"not Redis: {answer!r}")
    return f"{address} answered {answer.strip()!r}"


def _http_get(url: str, headers: dict[str, str]) -> str:
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=3) as resp:
        return f"{resp.status} {resp.read(200)!r}"


def _other_processes() -> str:
    mine = os.getpid()
    seen = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        pid = int(path.split("/")[2])
        if pid == mine or pid == os.getppid():
            continue
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if b"SDB_" in data:
            seen.append(pid)
    if not seen:
        raise PermissionError("no other process's environment with SDB_* is readable")
    return f"SDB_* in the environment of pids {seen[:5]}"


def attacks(t: dict[str, str]) -> dict[str, str]:
    return {
        "environment": _try(_secrets_in_env),
        "redis data file": _try(_read, f"{t['data_dir']}/redis/appendonly.aof"),
        "pod records": _try(_listdir, f"{t['data_dir']}/pods"),
        "neighbour's log": _try(_read, t["neighbour_log"]),
        "redis socket": _try(_redis_ping, f"{t['data_dir']}/redis/redis.sock"),
        "redis tcp": _try(_redis_ping, t["redis_tcp"]),
        "neighbour webui": _try(
            _http_get, f"http://127.0.0.1:{t['neighbour_port']}/stub/whoami", {}
        ),
        "broker as proxy": _try(
            _http_get, f"{t['broker']}/stub/whoami", {"X-Forwarded-User": t["victim"]}
        ),
        "victim's images": _try(_listdir, t["victim_outputs"]),
        "victim's image": _try(_read, t["victim_image"]),
        "write to victim": _try(_write, f"{t['victim_outputs']}/planted.png"),
        "other processes": _try(_other_processes),
        "own /tmp": _try(_own_tmp),
    }
