"""Broker settings from `SDB_*` environment variables (pydantic-settings).

Every field is documented in README's configuration reference; names are a
contract with users and later issues, so they do not change.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fleet import Duration, redis_problems

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}")


AUTO_WORKERS = 8  # SDB_WORKERS=auto never starts more (each process holds ~70 MiB)
SIZE = re.compile(r"(\d{1,12})\s*(B|KiB|MiB|GiB)?")
SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def auto_workers() -> int:
    """What SDB_WORKERS=auto starts here."""
    return min(usable_cpus(), AUTO_WORKERS)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, bounded by a cgroup CPU quota
    (a container limited to 2 CPUs on a 64-core node gets 2 workers, not 64)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, math.ceil(quota))) if quota else count


def _cgroup_cpu_quota() -> float | None:
    """CPUs the container's cgroup (v2, else v1) allows, or None for no limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        return int(quota) / int(period) if quota not in ("max", "-1") else None
    except (ValueError, ZeroDivisionError):
        return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def byte_size(value: object, low: int, high: int) -> int:
    """A size setting in bytes: `8MiB`, `512KiB`, `65536` (KiB, MiB, GiB are 1024-based),
    from LOW to HIGH bytes; anything else is refused with a message saying so."""
    text = str(value).strip() if isinstance(value, str | int) else ""
    found = SIZE.fullmatch(text)
    size = int(found[1]) * SIZE_UNITS[found[2]] if found else -1
    if not low <= size <= high:
        raise ValueError(
            f"{value!r} is not a size from {low >> 10}KiB to {high >> 20}MiB "
            "(a number of bytes, or with KiB, MiB or GiB: 8MiB)"
        )
    return size


def _split(value: object) -> list[Any]:
    """A comma-separated setting (or a list given in code) as its items; anything else is
    refused with a message (a TypeError would escape pydantic as a traceback)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    raise ValueError(f"expected a comma-separated list, got {type(value).__name__}")


@functools.lru_cache(maxsize=4096)
def _in_networks(peer: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Cached: asked several times per request, for a handful of distinct peers."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDB_", extra="forbid", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    redis_url: str | None = None
    # Production Redis (docs/operations.md, Redis): secrets as files from a mounted
    # Secret, read by fleet.redis_client for the broker, the reaper and the CLI alike.
    redis_password_file: Path | None = None
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    redis_sentinel_password_file: Path | None = None  # the sentinels' own AUTH
    redis_tls_check_hostname: bool = True  # off for Memorystore (fleet.redis_client)
    fleet: Path = Path("fleet.yaml")
    fleet_reload: Duration = 10.0
    auth: Literal["dev", "header", "iap", "oidc"] = "dev"
    auth_header: str = "X-Forwarded-User"
    auth_email_header: str = "X-Forwarded-Email"
    auth_groups_header: str = "X-Forwarded-Groups"
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = []
    data_dir: Path = Path("data")
    cookie_secret: SecretStr | None = None
    session_ttl: Duration = 12 * 3600.0
    api_token_ttl: Duration = 90 * 86400.0
    activity_flush: Duration = 10.0
    route_cache_ttl: Duration = 5.0
    queue_grace: Duration = 60.0
    proxy_connect_timeout: Duration = 10.0
    proxy_read_timeout: Duration = 3600.0
    controller_interval: Duration = 2.0
    reap_interval: Duration = 30.0  # 0: no in-broker reaper (a CronJob runs python -m reaper)
    reap_missed_probes: int = Field(3, ge=1)
    stop_pods_on_exit: bool | None = None
    workers: int | Literal["auto"] = "auto"
    drain_timeout: Duration = 10.0
    # An idle browser connection, a slow request head or a stalled upload.
    client_timeout: Duration = Field(75.0, gt=0)
    access_log: bool | None = None  # unset: on with SDB_LOG_FORMAT=json (broker.logs)
    # The overlay (fleet.yaml `overlay`): a bigger page passes without the bar; each of up
    # to 8 pages held at once costs the broker this much (broker/proxy/overlay.py).
    overlay_max_page: int = 8 << 20
    # Waiting room, admin, metrics (issue 6).
    metrics_cidrs: Annotated[list[IPNetwork], NoDecode] = []
    history_interval: Duration = Field(30.0, ge=1.0)
    choice_ttl: Duration = 180 * 86400.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Identity (docs/identity.md). Declared last: their checks read auth, host, trusted_proxies.
    public_url: str | None = None
    logout_url: str | None = None
    allowed_origins: Annotated[list[str], NoDecode] = []
    allowed_emails: Annotated[list[str], NoDecode] = []
    allowed_domains: Annotated[list[str], NoDecode] = []
    allowed_groups: Annotated[list[str], NoDecode] = []
    admin_users: Annotated[list[str], NoDecode] = []
    admin_groups: Annotated[list[str], NoDecode] = []
    jwks_cache_ttl: Duration = 3600.0
    session_cache_ttl: Duration = 5.0
    # oidc: how often a session's groups and address are asked of the provider again.
    session_refresh: Duration = Field(600.0, gt=0)
    iap_audience: str | None = None
    iap_jwks_url: str = "https://www.gstatic.com/iap/verify/public_key-jwk"
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: Annotated[list[str], NoDecode] = ["openid", "email", "profile"]
    oidc_groups_claim: str = "groups"
    oidc_require_verified_email: bool = True
    oidc_token_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    oidc_user_claim: Literal["email", "sub"] = "email"
    # Logins one client address may start per 10 minutes (oidc). Each keeps ~3 KB in Redis
    # for 10 minutes: unbounded, a flood fills a noeviction Redis and stops every claim.
    # An office behind one NAT address starts many: hundreds, not thousands.
    logins_per_client: int = Field(300, ge=1)

    @field_validator(
        "redis_url",
        "redis_password_file",
        "redis_tls_ca_file",
        "redis_tls_cert_file",
        "redis_tls_key_file",
        "redis_sentinel_password_file",
    )
    @classmethod
    def _redis(cls, value: object, info: ValidationInfo) -> object:
        """URL and files that cannot work together stop the broker at start, naming the
        setting (and never the password of a URL: fleet.redis_client.redacted)."""
        name = info.field_name
        if name is None:  # pydantic sets it for every field validator (ValidationInfo)
            return value
        if name != "redis_url" and "redis_url" not in info.data:
            return value  # the URL was refused already
        data = {**info.data, name: value}
        problems = redis_problems(
            data.get("redis_url"),
            data.get("redis_password_file"),
            data.get("redis_tls_ca_file"),
            data.get("redis_tls_cert_file"),
            data.get("redis_tls_key_file"),
            data.get("redis_sentinel_password_file"),
        )
        if problem := problems.get(f"SDB_{name.upper()}"):
            raise ValueError(problem)
        return value

    @field_validator("overlay_max_page", mode="before")
    @classmethod
    def _page_size(cls, value: object) -> int:
        return byte_size(value, 1 << 10, 256 << 20)

    @field_validator("trusted_proxies", "metrics_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        return [ipaddress.ip_network(v, strict=False) for v in _split(value)]

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        from .origin import normalised_origin

        origins = []
        for item in _split(value):
            origin = normalised_origin(item)
            if origin is None:
                raise ValueError(f"{item!r} is not an origin (scheme://host[:port])")
            origins.append(origin)
        return origins

    @field_validator("allowed_groups", "admin_users", "admin_groups", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return _split(value)

    @field_validator("allowed_emails", mode="before")
    @classmethod
    def _emails(cls, value: object) -> object:
        emails = [e.lower() for e in _split(value)]
        for email in emails:
            if email.count("@") != 1 or email.startswith("@") or email.endswith("@"):
                raise ValueError(f"{email!r} is not one address (name@domain)")
        return emails

    @field_validator("allowed_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        domains = [d.lower().removeprefix("@") for d in _split(value)]
        for domain in domains:
            if not DOMAIN.fullmatch(domain):
                raise ValueError(f"{domain!r} is not a domain name (example.com)")
        return domains

    @field_validator("oidc_scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> object:
        scopes = value.replace(",", " ").split() if isinstance(value, str) else _split(value)
        if "openid" not in scopes:
            raise ValueError("must include openid")
        return scopes

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            parts = urlsplit(value.strip())
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be http(s)://host[:port], e.g. https://sd.example.com")
            if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
                raise ValueError(
                    "must be the origin only (no path, query or user), e.g. https://sd.example.com"
                )
            return f"{parts.scheme}://{parts.netloc}"
        data = info.data
        local = is_loopback(data.get("host", "")) or data.get("trusted_proxies")
        if data.get("auth") == "oidc" and not local:
            raise ValueError(
                "is required with SDB_AUTH=oidc on a non-loopback SDB_HOST: the address users "
                "open (https://sd.example.com); the redirect URI is it + /_broker/callback"
            )
        return None

    @field_validator("iap_audience")
    @classmethod
    def _iap_audience(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("auth") == "iap" and not (value and value.startswith("/projects/")):
            raise ValueError(
                "is required with SDB_AUTH=iap: /projects/PROJECT_NUMBER/global/backendServices/"
                "SERVICE_ID (gcloud compute backend-services describe NAME --global "
                "--format='value(id)'), or /projects/PROJECT_NUMBER/apps/PROJECT_ID on App Engine"
            )
        return value

    @field_validator("iap_jwks_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            raise ValueError("must be an https:// URL (http only on loopback, for tests)")
        return value

    @field_validator("oidc_issuer", "oidc_client_id")
    @classmethod
    def _oidc_required(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("auth") != "oidc":
            return value
        if not value:
            raise ValueError("is required with SDB_AUTH=oidc")
        if info.field_name == "oidc_issuer":
            parts = urlsplit(value)
            if parts.scheme != "https" and not (
                parts.scheme == "http" and is_loopback(parts.hostname or "")
            ):
                raise ValueError("must be an https:// URL (http only on loopback, for tests)")
            return value.rstrip("/")
        return value

    @property
    def host_is_loopback(self) -> bool:
        return is_loopback(self.host)

    def may_scrape_metrics(self, peer: str | None) -> bool:
        """Peers in SDB_METRICS_CIDRS read /_broker/metrics without logging in (in every mode)."""
        return bool(peer and self.metrics_cidrs and _in_networks(peer, tuple(self.metrics_cidrs)))

    @property
    def access_logged(self) -> bool:
        """SDB_ACCESS_LOG, by default on for JSON logs (a sink wants every request)."""
        return self.log_format == "json" if self.access_log is None else self.access_log

    @property
    def worker_count(self) -> int:
        """SDB_WORKERS, with `auto` as the CPUs this process may use (at most AUTO_WORKERS)."""
        return auto_workers() if self.workers == "auto" else self.workers

    @field_validator("workers")
    @classmethod
    def _workers_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("a number of processes from 1 to 64, or auto")
        return value

    def is_trusted_proxy(self, peer: str | None) -> bool:
        if not peer or not self.trusted_proxies:
            return False
        return _in_networks(peer, tuple(self.trusted_proxies))

    def secret(self) -> bytes:
        """The cookie signing key: SDB_COOKIE_SECRET, else one generated once under the data dir."""
        if self.cookie_secret is not None:
            return self.cookie_secret.get_secret_value().encode()
        path = self.data_dir / "cookie-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()


#: SDB_* names that belong to other programs (the in-pod agent, the WebUI image's
#: entrypoint, the pods' own id, the test suite), not to the broker.
FOREIGN = frozenset({"SDB_POD_ID", "SDB_ROLE", "SDB_STOP_GRACE", "SDB_PRINT_COMMAND"})
FOREIGN_PREFIXES = ("SDB_AGENT_", "SDB_TEST_")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per SDB_* variable that is no setting, with the closest real name.

    pydantic-settings skips them silently: a misspelt SDB_ALLOWED_EMAIL would leave
    the allow list empty and the site open to everyone.
    """
    known = {f"SDB_{name.upper()}" for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("SDB_") or upper in known or upper in FOREIGN:
            continue
        if upper.startswith(FOREIGN_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{name}: not a setting of the broker{hint}")
    return lines
