"""sdbroker_redis_errors_total counts Redis outages only (issue 18, item 4).

The broker caught `(ConnectionError, TimeoutError, OSError)` as "Redis is down"
around its Redis calls: an API client that left mid-body (aiohttp sets
ConnectionResetError on the body) counted as a Redis error, and an alert on the
counter (docs/operations.md) fired for it. A real Redis stop still counts and
answers 503 "Redis is unreachable."
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.admin.support import Api, Person, fleet_file
from tests.support.procs import RedisServer

LEAVERS = 3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-own")
    server.start()
    yield server
    server.stop()


async def redis_errors(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(base + "/_broker/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    found = re.search(r"^sdbroker_redis_errors_total (\S+)$", text, re.M)
    assert found, "sdbroker_redis_errors_total is not exported"
    return float(found.group(1))


async def leave_mid_body(base: str, token: str) -> None:
    """PUT a size change announcing 1000 bytes, send 10, and close the connection."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        (
            "PUT /_broker/api/v1/profiles/default/sizes HTTP/1.1\r\n"
            f"Host: {url.host}:{url.port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"buffer":'
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.5)  # the handler has checked the token and waits for the body
    writer.close()
    await writer.wait_closed()


async def test_a_client_leaving_mid_body_is_no_redis_error_a_redis_stop_is(
    brokers, own_redis: RedisServer, tmp_path: Path
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 0, "max": 1})
    broker = brokers(
        fleet=fleet,
        redis=own_redis.url,
        SDB_AUTH="dev",
        SDB_ADMIN_USERS="root",
        SDB_WORKERS="1",
        SDB_METRICS_CIDRS="127.0.0.1/32",
    )
    root = Person(broker.url)
    bare = aiohttp.ClientSession()
    try:
        await root.login("root")
        token, _ = await root.admin_token()
        api = Api(bare, broker.url, token)
        assert (await api.call("GET", "/fleet"))[0] == 200
        assert await redis_errors(bare, broker.url) == 0

        for _ in range(LEAVERS):
            await leave_mid_body(broker.url, token)
        assert await redis_errors(bare, broker.url) == 0  # before: LEAVERS
        # Nor a traceback in the log for a client that went away.
        assert "Error handling request" not in broker.log_text()
        status, body = await api.call("PUT", "/profiles/default/sizes", {"buffer": 1})
        assert status == 200 and body["ok"], body  # the API itself is fine

        own_redis.stop()
        status, body = await api.call("GET", "/fleet")
        assert status == 503 and body["detail"] == "Redis is unreachable.", body
        assert await redis_errors(bare, broker.url) >= 1
    finally:
        await root.close()
        await bare.close()
