"""One person cannot open unbounded /_broker/events streams (each costs Redis calls a second)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from broker.waiting import STREAMS_PER_USER
from tests.support.procs import write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}


async def test_a_user_has_a_few_event_streams_not_hundreds(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=0, max=1)
    broker = brokers(fleet=fleet, **HEADER_AUTH)
    alice = {"X-Forwarded-User": "alice", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        # The one pod goes to someone else first: alice's streams then wait, open.
        holder = {"X-Forwarded-User": "holder"}
        for _ in range(200):
            async with http.get(broker.url + "/stub/whoami", headers=holder) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert resp.status == 200
        opened = []
        try:
            for _ in range(STREAMS_PER_USER):
                resp = await http.get(broker.url + "/_broker/events", headers=alice)
                assert resp.status == 200
                await resp.content.readline()  # the stream is open: "retry: 2000"
                opened.append(resp)
            async with http.get(broker.url + "/_broker/events", headers=alice) as extra:
                assert extra.status == 429
                assert extra.headers["Retry-After"] == "10"
            bob = {**alice, "X-Forwarded-User": "bob"}
            async with http.get(broker.url + "/_broker/events", headers=bob) as other:
                assert other.status == 200  # the cap is per person
            opened.pop().close()  # a tab closes: its slot comes back
            for _ in range(50):
                async with http.get(broker.url + "/_broker/events", headers=alice) as again:
                    if again.status == 200:
                        break
                await asyncio.sleep(0.1)
            assert again.status == 200
        finally:
            for resp in opened:
                with contextlib.suppress(Exception):
                    resp.close()
