"""The one way sdbroker connects to Redis (broker, reaper, CLI, tests).

A bounded blocking pool: a burst of claims waits briefly for a connection
instead of failing with "Too many connections" (redis-py's default pool
raises past 100), and short retries with backoff ride out a Redis restart.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

POOL_SIZE = 64


def connect_redis(url: str, *, pool_size: int = POOL_SIZE) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=5,
        decode_responses=True,
        health_check_interval=15,
        socket_connect_timeout=3,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)
