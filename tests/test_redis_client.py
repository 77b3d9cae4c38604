"""fleet.redis_client: the asyncio retry policy, and that it really backs off and rides out a restart.

redis-py 8.2 converts a synchronous ``redis.retry.Retry`` given to an asyncio
client and warns about it (``redis/asyncio/retry.py``, ``_to_async_retry``);
the suite runs with warnings as errors, and so does this file explicitly.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from fleet.errors import StoreUnavailable
from fleet.redis_client import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    RETRIES,
    ClusterModeRefused,
    connect_redis,
)
from tests.redis.servers import plain_server
from tests.support.procs import RedisServer


async def test_the_pool_gets_an_asyncio_retry_and_no_warning(redis_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = connect_redis(redis_url)
        try:
            assert await client.ping()
            connection = await client.connection_pool.get_connection()
            try:
                retry = connection.retry
            finally:
                await client.connection_pool.release(connection)
        finally:
            await client.aclose()
    assert [str(w.message) for w in caught] == []
    assert isinstance(retry, AsyncRetry)
    assert retry._retries == RETRIES
    backoff = retry._backoff
    assert isinstance(backoff, ExponentialBackoff)
    # Retry.call_with_retry sleeps compute(n) after the n-th failure (n from 1).
    assert [backoff.compute(n) for n in range(1, RETRIES + 1)] == [
        min(BACKOFF_CAP, BACKOFF_BASE * 2**n) for n in range(1, RETRIES + 1)
    ]


async def test_a_server_that_drops_every_connection_is_retried_with_growing_gaps() -> None:
    """Each try waits longer than the one before; then the error reaches the caller.

    redis-py nests two loops of the same policy: the command's, and inside
    each connect the health-check PING's (``Connection.connect_check_health``
    -> ``check_health``). So a server that accepts and hangs up sees between
    1 + RETRIES and (1 + RETRIES) ** 2 connections; the first 1 + RETRIES are
    the inner loop's, spaced by the backoff.
    """
    accepted: list[float] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect_redis(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await client.get("anything")
        assert isinstance(caught.value.__cause__, RedisConnectionError)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert 1 + RETRIES <= len(accepted) <= (1 + RETRIES) ** 2
    gaps = [later - earlier for earlier, later in zip(accepted, accepted[1:], strict=False)]
    # asyncio.sleep never returns early: each gap is at least its backoff
    # (less a millisecond of clock granularity). No upper bound: that is timing.
    for n, gap in enumerate(gaps[:RETRIES], start=1):
        assert gap >= min(BACKOFF_CAP, BACKOFF_BASE * 2**n) - 0.001, gaps


async def test_an_unreachable_redis_is_an_error_not_a_hang() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = connect_redis(f"redis://127.0.0.1:{port}/0")
        try:
            with pytest.raises(StoreUnavailable, match="connecting to 127.0.0.1"):
                await client.ping()
        finally:
            await client.aclose()


async def test_a_redis_restart_within_the_backoff_is_ridden_out(tmp_path: Path) -> None:
    """A real redis-server killed and started again on its port: the caller sees no error."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = connect_redis(server.url)
    try:
        await client.set("k", "before")
        server.stop()

        # Restart while the command below is between retries: the first
        # try fails on the dead pooled connection, a later one reconnects.
        async def restart() -> None:
            await asyncio.sleep(0.05)
            await asyncio.to_thread(server.start)

        restarting = asyncio.create_task(restart())
        assert await client.set("k", "after") is True
        await restarting
        assert await client.get("k") == "after"
    finally:
        await client.aclose()
        server.stop()


async def test_a_redis_cluster_node_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """The claim scripts touch keys of many slots: a cluster node would answer CROSSSLOT
    or MOVED mid-claim. Refused on connect instead; before, the first claim failed."""
    server = plain_server(
        tmp_path,
        *("--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf")),
        below=55536,
    ).start()
    client = connect_redis(f"redis://127.0.0.1:{server.port}/0")
    try:
        with pytest.raises(StoreUnavailable, match="runs Redis Cluster .* not support") as caught:
            await client.ping()
        assert isinstance(caught.value.__cause__, ClusterModeRefused)
    finally:
        await client.aclose()
        server.stop()


async def test_a_redis_cluster_node_on_a_unix_socket_is_refused_naming_the_socket(
    tmp_path: Path,
) -> None:
    """A unix socket connection has a path, no host or port (redis-py 8.2,
    UnixDomainSocketConnection): the refusal names the path. Before, building the
    message raised AttributeError, which escaped as no fleet error at all."""
    with tempfile.TemporaryDirectory(prefix="sdb", dir="/tmp") as short:  # sun_path: 108 bytes
        sock = f"{short}/redis.sock"
        server = plain_server(
            tmp_path,
            *("--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf")),
            *("--unixsocket", sock, "--unixsocketperm", "700"),
            below=55536,
        ).start()
        client = connect_redis(f"unix://{sock}?db=0")
        try:
            with pytest.raises(StoreUnavailable, match=f"Redis at {sock} runs Redis Cluster"):
                await client.ping()
        finally:
            await client.aclose()
            server.stop()
