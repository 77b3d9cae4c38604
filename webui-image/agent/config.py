"""The agent's settings: environment variables in, one frozen ``Config`` out.

Every value is checked here, before anything starts, so a typo in a pod
template ends the container at once with one line naming the variable
(``ConfigError``), instead of a pod that never turns Ready for no stated reason.
The variables and their defaults are listed in ``webui-image/README.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MODES = ("kubernetes", "agones", "standalone")
WEBUIS = ("a1111", "comfyui")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(Exception):
    """A setting is wrong: the agent says which one and exits with status 2."""


@dataclass(frozen=True)
class Config:
    mode: str  # resolved: never "auto"
    webui: str
    webui_url: str
    host: str
    port: int
    outputs_root: Path
    holding_dir: Path
    # Split layout (the pods sdbroker builds): the WebUI runs in a container of
    # its own without the outputs volume, and sees the per-pod folder it saves
    # into (holding_dir here) at this path. None: one container, where the
    # WebUI sees /outputs itself (docker run, older pod templates).
    webui_outputs: Path | None
    outputs_link: Path
    podinfo_dir: Path
    agones_url: str
    poll_interval: float
    health_interval: float
    health_grace: float
    request_timeout: float
    log_level: str
    # People's WebUI settings (webui_settings.py): kept in <outputs>/<slug>/.webui-settings,
    # restored at the claim, saved every settings_interval when changed and at SIGTERM.
    keep_settings: bool = True
    # The folder shared with the WebUI where its --styles-file and --ui-config-file are
    # (an emptyDir); None: only what the WebUI's API carries (config.json, styles).
    webui_settings: Path | None = None
    settings_interval: float = 30.0

    @property
    def split(self) -> bool:
        return self.webui_outputs is not None

    @property
    def labels_file(self) -> Path:
        return self.podinfo_dir / "labels"

    @property
    def annotations_file(self) -> Path:
        return self.podinfo_dir / "annotations"


def parse_duration(name: str, text: str) -> float:
    """``500ms``, ``2s``, ``5m``, ``1h`` or plain seconds, as everywhere in sdbroker."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name}={text!r} is not a duration (examples: 500ms, 2s, 5m)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}={text!r} must be greater than zero")
    return seconds


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, str(default)).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{name}={text!r} is not a TCP port (1-65535)")
    return int(text)


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    text = env.get(name, default).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={text!r} is not an http(s) URL")
    return text


def _path(env: Mapping[str, str], name: str, default: str) -> Path:
    text = env.get(name, default).strip()
    if not text.startswith("/"):
        raise ConfigError(f"{name}={text!r} must be an absolute path")
    return Path(text)


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    return _path(env, name, "") if env.get(name, "").strip() else None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text not in ("0", "1", "true", "false"):
        raise ConfigError(f"{name}={text!r} must be 1 or 0")
    return text in ("1", "true")


def _resolve_mode(wanted: str, env: Mapping[str, str], podinfo_dir: Path) -> str:
    """``auto``: Agones sets AGONES_SDK_HTTP_PORT in its pods; a Downward API mount means plain pods."""
    if wanted != "auto":
        return wanted
    if env.get("AGONES_SDK_HTTP_PORT"):
        return "agones"
    if (podinfo_dir / "labels").exists():
        return "kubernetes"
    return "standalone"


def load(env: Mapping[str, str] | None = None) -> Config:
    """Read and check every ``SDB_AGENT_*`` variable (and Agones' ``AGONES_SDK_HTTP_PORT``)."""
    env = os.environ if env is None else env
    podinfo_dir = _path(env, "SDB_AGENT_PODINFO_DIR", "/etc/podinfo")
    wanted = _choice(env, "SDB_AGENT_MODE", "auto", ("auto", *MODES))
    level = env.get("SDB_AGENT_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ConfigError(f"SDB_AGENT_LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}")
    sdk_port = _port(env, "AGONES_SDK_HTTP_PORT", 9358)

    def duration(name: str, default: str) -> float:
        return parse_duration(name, env.get(name, default))

    return Config(
        mode=_resolve_mode(wanted, env, podinfo_dir),
        webui=_choice(env, "SDB_AGENT_WEBUI", "a1111", WEBUIS),
        webui_url=_url(env, "SDB_AGENT_WEBUI_URL", "http://127.0.0.1:7860"),
        host=env.get("SDB_AGENT_HOST", "0.0.0.0").strip() or "0.0.0.0",
        port=_port(env, "SDB_AGENT_PORT", 7861),
        outputs_root=_path(env, "SDB_AGENT_OUTPUTS_ROOT", "/outputs"),
        holding_dir=_path(env, "SDB_AGENT_HOLDING_DIR", "/tmp/sdbroker/unclaimed"),
        webui_outputs=_optional_path(env, "SDB_AGENT_WEBUI_OUTPUTS"),
        outputs_link=_path(env, "SDB_AGENT_OUTPUTS_LINK", "/tmp/sdbroker/outputs"),
        podinfo_dir=podinfo_dir,
        agones_url=f"http://127.0.0.1:{sdk_port}",
        poll_interval=duration("SDB_AGENT_POLL_INTERVAL", "1s"),
        health_interval=duration("SDB_AGENT_HEALTH_INTERVAL", "2s"),
        health_grace=duration("SDB_AGENT_HEALTH_GRACE", "5m"),
        request_timeout=duration("SDB_AGENT_REQUEST_TIMEOUT", "5s"),
        log_level=level,
        keep_settings=_switch(env, "SDB_AGENT_KEEP_SETTINGS", True),
        webui_settings=_optional_path(env, "SDB_AGENT_WEBUI_SETTINGS"),
        settings_interval=duration("SDB_AGENT_SETTINGS_INTERVAL", "30s"),
    )


def check_filesystem(config: Config) -> None:
    """Fail at start, not at the first claim, when the volumes the agent needs are missing.

    A pod whose outputs volume is absent or read-only would be claimed and then
    silently lose the user's images; better it never turns Ready.
    """
    if config.mode == "kubernetes" and not config.labels_file.is_file():
        raise ConfigError(
            f"{config.labels_file} is missing: mount a downwardAPI volume with metadata.labels "
            f"and metadata.annotations at {config.podinfo_dir} (SDB_AGENT_PODINFO_DIR)"
        )
    if config.mode == "standalone":
        return  # no claims, so the agent never writes an outputs folder
    root = config.outputs_root
    if not root.is_dir():
        raise ConfigError(f"outputs root {root} is not a directory (SDB_AGENT_OUTPUTS_ROOT)")
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(
            f"outputs root {root} is not writable by uid {os.getuid()} gid {os.getgid()}: "
            "mount the outputs volume read-write in this container and chown it to this uid "
            "on the share"
        )
    handoff = config.holding_dir
    # Split layout: the agent empties what the WebUI container saves, so the
    # shared folder must already be there (an emptyDir), not made in our own /tmp.
    if config.split and not (handoff.is_dir() and os.access(handoff, os.W_OK | os.X_OK)):
        raise ConfigError(
            f"{handoff} (SDB_AGENT_HOLDING_DIR) is not a writable directory: mount the pod's "
            f"handoff emptyDir there, and at {config.webui_outputs} in the WebUI container"
        )
