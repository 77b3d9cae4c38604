"""Broker settings from `SDB_*` environment variables (pydantic-settings).

Every field is documented in README's configuration reference; names are a
contract with users and later issues, so they do not change.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fleet.durations import Duration

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDB_", extra="forbid", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    redis_url: str | None = None
    fleet: Path = Path("fleet.yaml")
    auth: Literal["dev", "header"] = "dev"
    auth_header: str = "X-Forwarded-User"
    auth_email_header: str = "X-Forwarded-Email"
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = []
    data_dir: Path = Path("data")
    cookie_secret: SecretStr | None = None
    session_ttl: Duration = 12 * 3600.0
    activity_flush: Duration = 10.0
    route_cache_ttl: Duration = 5.0
    queue_grace: Duration = 60.0
    proxy_connect_timeout: Duration = 10.0
    proxy_read_timeout: Duration = 3600.0
    controller_interval: Duration = 2.0
    stop_pods_on_exit: bool | None = None
    access_log: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        return [ipaddress.ip_network(v, strict=False) for v in _split(value)]  # type: ignore[union-attr]

    @property
    def host_is_loopback(self) -> bool:
        if self.host in LOOPBACK_HOSTS:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def is_trusted_proxy(self, peer: str | None) -> bool:
        if not peer or not self.trusted_proxies:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_proxies)

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
