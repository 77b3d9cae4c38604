"""The one way sdbroker connects to Redis (broker, reaper, CLI, tests).

A bounded blocking pool: a burst of claims waits briefly for a connection
instead of failing with "Too many connections" (redis-py's default pool
raises past 100), and short retries with backoff ride out a Redis restart.

Production Redis (docs/operations.md, Redis): a password read from a file
(`SDB_REDIS_PASSWORD_FILE`, a Kubernetes Secret mounted as files), TLS with
`rediss://` and a CA file (`SDB_REDIS_TLS_CA_FILE`, Memorystore's server CA),
or Redis Sentinel with `redis+sentinel://HOST:PORT,.../MASTER[/DB]`. Redis
Cluster is refused: the Lua scripts touch keys of many slots at once.
Secrets are never logged: URLs in messages go through `redacted`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, Connection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import StoreUnavailable
from .redis_boundary import FleetRedis

POOL_SIZE = 64
# Up to 3 retries after the first try, sleeping min(1 s, 0.05 s * 2**n):
# 0.1 s, 0.2 s, 0.4 s. A Redis restart of about 0.7 s is ridden out; a longer
# outage surfaces as an error within about a second instead of hanging.
RETRIES = 3
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


class RedisSettings(BaseSettings):
    """`SDB_REDIS_*` files beside the URL, read here so the broker, the reaper and the
    CLI agree (fleet knows nothing of the broker's settings)."""

    model_config = SettingsConfigDict(env_prefix="SDB_REDIS_", extra="ignore")

    password_file: Path | None = None
    # The sentinels' own AUTH (sentinel.conf `requirepass`, Redis 5.0.1 on): with
    # redis+sentinel://, the master's password stays in password_file.
    sentinel_password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Memorystore's server certificate names its IP in the CN only, which OpenSSL never
    # matches for an IP address (envoyproxy/ratelimit PR #409, 2023: "GCP Memorystore
    # sets the CN to an IP address"). Its CA is the instance's own ("one or more unique
    # Certificate Authorities", Memorystore docs, About in-transit encryption), so the
    # chain alone names the server there: the memorystore component turns this off.
    tls_check_hostname: bool = True


class RedisConfigError(StoreUnavailable, ValueError):
    """The Redis settings cannot work; the message names the setting and never a secret."""


class ClusterModeRefused(RedisConnectionError):
    """The server runs Redis Cluster, which sdbroker does not support."""


class PasswordFileUnreadable(RedisConnectionError):
    """SDB_REDIS_PASSWORD_FILE could not be read when a connection was made."""


def redacted(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "(an unparsable Redis URL)"
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class PasswordFile(CredentialProvider):
    """AUTH with the password in a file, read at every new connection: a rotated
    Secret (the kubelet rewrites mounted files) is used without a restart."""

    def __init__(self, path: Path, setting: str = "SDB_REDIS_PASSWORD_FILE") -> None:
        self.path = path
        self.setting = setting

    def __repr__(self) -> str:
        return f"PasswordFile({str(self.path)!r})"

    def get_credentials(self) -> tuple[str]:
        try:
            password = self.path.read_text().strip("\r\n")
        except OSError as exc:
            raise PasswordFileUnreadable(
                f"{self.setting}: cannot read {self.path}: {exc.strerror}"
            ) from None
        if not password:
            raise PasswordFileUnreadable(f"{self.setting}: {self.path} is empty")
        return (password,)

    async def get_credentials_async(self) -> tuple[str]:
        return await asyncio.to_thread(self.get_credentials)


@dataclass(frozen=True)
class SentinelTarget:
    """A `redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]` URL, taken apart."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int


def parse_sentinel_url(url: str) -> SentinelTarget:
    rest = url.split("://", 1)[1]
    hosts, _, path = rest.partition("/")
    if "@" in hosts or "?" in url or "#" in url:
        raise RedisConfigError(
            "SDB_REDIS_URL: a redis+sentinel:// URL takes no password, query or fragment "
            "(the master's password comes from SDB_REDIS_PASSWORD_FILE)"
        )
    sentinels = []
    for item in hosts.split(","):
        host, port = item.strip(), SENTINEL_PORT
        if item.rsplit(":", 1)[-1].isdigit() and not item.endswith("]"):
            host, port = item.rsplit(":", 1)[0], int(item.rsplit(":", 1)[1])
        host = host.strip("[]")
        if not host or not 0 < port < 65536:
            raise RedisConfigError(f"SDB_REDIS_URL: {item!r} is not a sentinel HOST:PORT")
        sentinels.append((host, port))
    parts = [p for p in path.split("/") if p]
    if (
        not parts
        or len(parts) > 2
        or parts[0].isdigit()
        or (len(parts) == 2 and not parts[1].isdigit())
    ):
        raise RedisConfigError(
            "SDB_REDIS_URL: name the master after the sentinels: "
            "redis+sentinel://HOST:26379,HOST:26379,HOST:26379/MASTER_NAME[/DB]"
        )
    return SentinelTarget(tuple(sentinels), parts[0], int(parts[1]) if len(parts) == 2 else 0)


def redis_problems(
    url: str | None,
    password_file: Path | None = None,
    tls_ca_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
    sentinel_password_file: Path | None = None,
) -> dict[str, str]:
    """What cannot work, by setting name (`SDB_REDIS_URL`...): empty when all is well.

    Each problem is put on the last setting it involves, so the broker's settings
    can report it on that field (their order: URL, password, CA, cert, key).
    """
    problems: dict[str, str] = {}
    files = {
        "SDB_REDIS_PASSWORD_FILE": password_file,
        "SDB_REDIS_TLS_CA_FILE": tls_ca_file,
        "SDB_REDIS_TLS_CERT_FILE": tls_cert_file,
        "SDB_REDIS_TLS_KEY_FILE": tls_key_file,
        "SDB_REDIS_SENTINEL_PASSWORD_FILE": sentinel_password_file,
    }
    for name, path in files.items():
        if path is not None and not path.is_file():
            problems[name] = f"{path} is not a readable file"
    if url is None:
        for name, path in files.items():
            if path is not None:
                problems[name] = "needs SDB_REDIS_URL (the embedded Redis takes no password or TLS)"
        return problems
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        problems["SDB_REDIS_URL"] = (
            f"{redacted(url)!r} must start with one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
            + " (Redis Cluster is not supported)"
        )
        return problems
    if scheme == "redis+sentinel":
        try:
            parse_sentinel_url(url)
        except RedisConfigError as exc:
            problems["SDB_REDIS_URL"] = str(exc).removeprefix("SDB_REDIS_URL: ")
    elif sentinel_password_file is not None:
        problems["SDB_REDIS_SENTINEL_PASSWORD_FILE"] = (
            "is set but SDB_REDIS_URL is not redis+sentinel://: the sentinels' password "
            "is for Sentinel only (the server's is SDB_REDIS_PASSWORD_FILE)"
        )
    for name in ("SDB_REDIS_TLS_CA_FILE", "SDB_REDIS_TLS_CERT_FILE", "SDB_REDIS_TLS_KEY_FILE"):
        if files[name] is not None and scheme != "rediss":
            problems[name] = (
                "is set but SDB_REDIS_URL is not rediss://: use rediss://HOST:PORT/0 "
                "(Memorystore's TLS port is 6378), so no connection goes out in clear"
            )
    if (tls_cert_file is None) != (tls_key_file is None):
        problems["SDB_REDIS_TLS_KEY_FILE"] = (
            "SDB_REDIS_TLS_CERT_FILE and SDB_REDIS_TLS_KEY_FILE go together (a client certificate)"
        )
    if password_file is not None and scheme in ("redis", "rediss") and urlsplit(url).password:
        problems["SDB_REDIS_PASSWORD_FILE"] = (
            "is set and SDB_REDIS_URL holds a password too: keep the password out of the URL"
        )
    return problems


def check_redis_settings(url: str, options: RedisSettings) -> None:
    """Raise RedisConfigError naming each setting when URL and files cannot work together."""
    problems = redis_problems(
        url,
        options.password_file,
        options.tls_ca_file,
        options.tls_cert_file,
        options.tls_key_file,
        options.sentinel_password_file,
    )
    if problems:
        raise RedisConfigError("; ".join(f"{name}: {text}" for name, text in problems.items()))


async def refuse_cluster_mode(connection: AbstractConnection) -> None:
    """After AUTH and SELECT, one INFO per new connection: a Redis Cluster node would
    answer MOVED or CROSSSLOT to the claim scripts, so it is refused with a clear
    message instead (INFO's `cluster_enabled` field, Redis 3.0 on, src/server.c
    genRedisInfoString, "# Cluster" section)."""
    # No health-check PING here: a reconnect inside that PING's retries would land
    # here again and nest without end (the default path passes check_health=False
    # on reconnects: redis/asyncio/connection.py, send_packed_command).
    await connection.on_connect_check_health(check_health=False)
    await connection.send_command("INFO", "cluster", check_health=False)
    try:
        reply = await connection.read_response()
    except ResponseError:  # INFO denied to this ACL user, or renamed: nothing to tell
        return
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    if "cluster_enabled:1" in text:
        await connection.disconnect()
        raise ClusterModeRefused(
            f"Redis at {_address(connection)} runs Redis Cluster "
            "(cluster_enabled:1), which sdbroker does not support: use one primary "
            "(Memorystore Standard, or Redis with Sentinel)"
        )


def _address(connection: AbstractConnection) -> str:
    """host:port, or the socket's path: a unix socket connection has no port (redis-py
    8.2, redis/asyncio/connection.py, UnixDomainSocketConnection)."""
    if isinstance(connection, UnixDomainSocketConnection):
        return connection.path
    if isinstance(connection, Connection):
        return f"{connection.host}:{connection.port}"
    return type(connection).__name__


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (it asks the sentinels for the master at each connect and
    drops connections to a demoted one: redis/asyncio/sentinel.py, SentinelConnectionPool,
    SentinelManagedConnection.read_response) that waits for a free connection like ours."""


class ShortSentinel(Sentinel):
    """redis-py's MasterNotFoundError lists the repr of every sentinel client (a page of
    text per sentinel); ours names the addresses and the master, which is what to check."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            where = ", ".join(
                f"{s.connection_pool.connection_kwargs['host']}:"
                f"{s.connection_pool.connection_kwargs['port']}"
                for s in self.sentinels
            )
            raise MasterNotFoundError(
                f"Redis Sentinel: no healthy master {service_name!r} from the sentinels "
                f"at {where} (unreachable, refusing our password: see "
                "SDB_REDIS_SENTINEL_PASSWORD_FILE, or they know no such master)"
            ) from None


class SentinelRedis(FleetRedis):
    """The master's client; closing it also closes its sentinels' connections."""

    # Not `sentinel`: that name is redis-py's SENTINEL command (AsyncSentinelCommands).
    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


def retry_policy() -> Retry:
    """The asyncio Retry: redis-py 8.2+ converts (and warns about) a sync one."""
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES)


def connect_redis(
    url: str, *, pool_size: int = POOL_SIZE, options: RedisSettings | None = None
) -> Redis:
    """A client for URL with the SDB_REDIS_* files (from the environment unless given).

    Connects lazily; RedisConfigError (a StoreUnavailable) when the settings cannot work.
    Its commands raise StoreUnavailable when Redis cannot be reached (fleet.redis_boundary).
    """
    options = options if options is not None else RedisSettings()
    check_redis_settings(url, options)
    kwargs: dict[str, Any] = {
        "max_connections": pool_size,
        "timeout": 5,
        "decode_responses": True,
        "health_check_interval": 15,
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
        "retry": retry_policy(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "redis_connect_func": refuse_cluster_mode,
    }
    if options.password_file:
        kwargs["credential_provider"] = PasswordFile(options.password_file)
    if url.lower().startswith("rediss://"):
        kwargs |= {"ssl_cert_reqs": "required", "ssl_check_hostname": options.tls_check_hostname}
        if options.tls_ca_file:
            kwargs["ssl_ca_certs"] = str(options.tls_ca_file)
        if options.tls_cert_file:
            kwargs["ssl_certfile"] = str(options.tls_cert_file)
            kwargs["ssl_keyfile"] = str(options.tls_key_file)
    if url.lower().startswith("redis+sentinel://"):
        target = parse_sentinel_url(url)
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 3}
        if options.sentinel_password_file:
            sentinel_kwargs["credential_provider"] = PasswordFile(
                options.sentinel_password_file, "SDB_REDIS_SENTINEL_PASSWORD_FILE"
            )
        sentinel = ShortSentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(
            target.master,
            redis_class=SentinelRedis,
            connection_pool_class=BlockingSentinelPool,
            db=target.db,
            **kwargs,
        )
        client.sentinels = sentinel
        return client
    # from_pool: the client owns its pool and aclose() disconnects it (redis-py 8.2,
    # redis/asyncio/client.py Redis.from_pool); Redis(connection_pool=...) leaves the
    # pool's sockets open after aclose() (auto_close_connection_pool stays False).
    return FleetRedis.from_pool(BlockingConnectionPool.from_url(url, **kwargs))
