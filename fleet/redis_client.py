"""The one way sdbroker connects to Redis (broker, reaper, CLI, tests).

A bounded blocking pool: a burst of claims waits briefly for a connection
instead of failing with "Too many connections" (redis-py's default pool
raises past 100), and short retries with backoff ride out a Redis restart.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

POOL_SIZE = 64
# Up to 3 retries after the first try, sleeping min(1 s, 0.05 s * 2**n):
# 0.1 s, 0.2 s, 0.4 s. A Redis restart of about 0.7 s is ridden out; a longer
# outage surfaces as an error within about a second instead of hanging.
RETRIES = 3
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0


def retry_policy() -> Retry:
    """The asyncio Retry: redis-py 8.2+ converts (and warns about) a sync one."""
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES)


def connect_redis(url: str, *, pool_size: int = POOL_SIZE) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=5,
        decode_responses=True,
        health_check_interval=15,
        socket_connect_timeout=3,
        socket_timeout=10,
        retry=retry_policy(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)
