"""A Redis out of reach is `StoreUnavailable` at every way a command leaves the client
(issue 18, item 4): callers catch that one error, not OSError, so an OSError that is
no Redis outage is never reported as one. Against a real redis-server, stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fleet import Event, FleetStore, Kind, StoreUnavailable, connect_redis, keys
from tests.support.procs import RedisServer


@pytest.fixture
async def stopped(tmp_path: Path) -> AsyncIterator[tuple[Redis, Any]]:
    """A client and a pub/sub subscribed while Redis ran; then the server is stopped."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = connect_redis(server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await client.set("k", "v")
        await pubsub.subscribe(keys.EVENTS)
        server.stop()
        yield client, pubsub
    finally:
        await pubsub.aclose()
        await client.aclose()
        server.stop()


async def _watch(client: Redis) -> None:
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch("k")  # WATCH runs at once (Pipeline.immediate_execute_command)


async def _transaction(client: Redis) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.get("k")
        await pipe.execute()


async def _listen(pubsub: Any) -> None:
    async with asyncio.timeout(30):  # a hang fails the test instead of stalling the suite
        async for _ in pubsub.listen():  # as fleet/listener.py does
            pass


CALLS: dict[str, Callable[[Redis, Any], Awaitable[object]]] = {
    "command": lambda client, _: client.get("k"),
    "script (strike.lua)": lambda client, _: FleetStore(client).strike("default-1"),
    "store read": lambda client, _: FleetStore(client).lookup("ann"),
    "script batch (pods.lua)": lambda client, _: FleetStore(client).pods_by_id(["a", "b"]),
    "pipeline": lambda client, _: FleetStore(client).counts("default"),
    "transaction": lambda client, _: _transaction(client),
    "watch": lambda client, _: _watch(client),
    "publish": lambda client, _: FleetStore(client).publish(Event(Kind.READY, "default", "x")),
    "subscribe": lambda client, _: client.pubsub().subscribe("other"),
    "listen": lambda _, pubsub: _listen(pubsub),
}


@pytest.mark.parametrize("call", CALLS)
async def test_a_stopped_redis_is_store_unavailable_never_an_oserror(
    stopped: tuple[Redis, Any], call: str
) -> None:
    client, pubsub = stopped
    with pytest.raises(StoreUnavailable, match="Redis unreachable") as caught:
        await CALLS[call](client, pubsub)
    assert isinstance(caught.value.__cause__, RedisConnectionError | RedisTimeoutError)
    # The point of the boundary: whoever catches OSError (a closed tab, a failed
    # file write) does not catch a Redis outage, and the reverse.
    assert not isinstance(caught.value, OSError | RedisConnectionError)
