"""Where Redis errors become the fleet's: a lost or refused Redis is `StoreUnavailable`.

Callers catch that one error, never `OSError`: an OSError near a Redis call (a
closed browser tab, a failed file write) is no Redis outage, and must not be
shown or counted as one (issue 18, item 4).

Which errors mean "Redis is away", from redis-py 8.2's asyncio client as
installed (redis/asyncio/connection.py): `AbstractConnection.connect` turns a
socket timeout into `TimeoutError` and every other failure (OSError, a
credential provider's) into `ConnectionError`; `send_packed_command` and
`read_response` turn OSError and asyncio timeouts into the same two. Auth and
"loading" replies are `ConnectionError` subclasses (`AuthenticationError`,
`BusyLoadingError`), as are the pool's "No connection available."
(`BlockingConnectionPool.get_connection`) and Sentinel's `MasterNotFoundError`.
So those two classes (redis.exceptions), and nothing else, are translated.

The translation sits above redis-py's own retries, never inside them: its
`Retry` and its pipelines' WATCH handling test for `ConnectionError` and
`TimeoutError` (redis/asyncio/client.py, `Redis.execute_command`,
`Pipeline.execute`, `Pipeline.immediate_execute_command`, `PubSub._execute`),
so a connection class raising another type would break them. Hence the three
public entry points a command passes through here: a client's
`execute_command` (every command and script), a pipeline's `execute` and its
immediate WATCH-mode commands, and a pub/sub's `execute_command` and
`parse_response` (subscribe, listen, get_message).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import StoreUnavailable

#: What redis-py raises when Redis cannot be reached or refuses the connection.
REDIS_LOST = (RedisConnectionError, RedisTimeoutError)

T = TypeVar("T")


def unavailable(exc: BaseException) -> NoReturn:
    """Raise the fleet's error for a redis-py connection error, the original as its cause."""
    raise StoreUnavailable(f"Redis unreachable: {exc}") from exc


async def translated(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except REDIS_LOST as exc:
        unavailable(exc)


class FleetPipeline(Pipeline):
    """redis-py's pipeline whose failures to reach Redis are StoreUnavailable."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await translated(lambda: super(FleetPipeline, self).execute(raise_on_error))

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        return await translated(
            lambda: super(FleetPipeline, self).immediate_execute_command(*args, **options)
        )


class FleetPubSub(PubSub):
    """redis-py's pub/sub whose failures to reach Redis are StoreUnavailable."""

    async def execute_command(self, *args: Any) -> None:
        await translated(lambda: super(FleetPubSub, self).execute_command(*args))

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        return await translated(lambda: super(FleetPubSub, self).parse_response(block, timeout))


class FleetRedis(Redis):
    """The client `connect_redis` makes: redis-py's, with the boundary above."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await translated(lambda: super(FleetRedis, self).execute_command(*args, **options))

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> FleetPipeline:
        # As Redis.pipeline (redis/asyncio/client.py), with our class.
        return FleetPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> FleetPubSub:
        # As Redis.pubsub (redis/asyncio/client.py), with our class.
        return FleetPubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)
