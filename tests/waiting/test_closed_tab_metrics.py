"""A waiting tab that closes is no Redis error: sdbroker_redis_errors_total is for alerts
(docs/operations.md), and it counted every closed tab (issue 17, item 6)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from tests.support.procs import write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}
TABS = 3


async def redis_errors(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(base + "/_broker/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    found = re.search(r"^sdbroker_redis_errors_total (\S+)$", text, re.M)
    assert found, "sdbroker_redis_errors_total is not exported"
    return float(found.group(1))


async def test_closed_waiting_tabs_count_no_redis_errors(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=0, max=1)
    broker = brokers(fleet=fleet, SDB_WORKERS="1", SDB_METRICS_CIDRS="127.0.0.1/32", **HEADER_AUTH)
    async with aiohttp.ClientSession() as http:
        holder = {"X-Forwarded-User": "holder"}
        for _ in range(200):  # the one pod goes to someone else: alice waits
            async with http.get(broker.url + "/stub/whoami", headers=holder) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert resp.status == 200
        assert await redis_errors(http, broker.url) == 0
        alice = {"X-Forwarded-User": "alice", "Accept": "text/event-stream"}
        for _ in range(TABS):
            resp = await http.get(broker.url + "/_broker/events", headers=alice)
            assert resp.status == 200
            while not (await resp.content.readline()).startswith(b"event: status"):
                pass  # "retry: 2000", then the first status: the stream is open
            resp.close()  # the tab closes; the broker's next write finds it gone
        await asyncio.sleep(3.5)  # a few of the stream's 1 s ticks: each writes once
        assert await redis_errors(http, broker.url) == 0
