"""The waiting queue end to end: first come first served under a burst, an open stream keeps
a place, leaving gives it up, and scripts get 503 + Retry-After + JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file, read_events

HEADER_ENV = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_ADMIN_USERS": "root",
}


async def queue_order(url: str) -> list[str]:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        return list(await client.zrange(keys.queue("default"), 0, -1))
    finally:
        await client.aclose()


async def test_first_come_first_served_under_a_burst(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(
        tmp_path / "fleet.yaml", tmp_path / "outputs", {"min": 0, "buffer": 0, "max": 3}
    )
    first, second = brokers(fleet=fleet, **HEADER_ENV), brokers(fleet=fleet, **HEADER_ENV)
    root = Person(first.url, header_user="root")
    users = [f"user-{i}" for i in range(9)]
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    streams: dict[str, asyncio.Task] = {}
    try:
        token, _ = await root.admin_token()
        api = Api(http, first.url, token)
        # Scale to zero: nobody has a pod, everyone arrives at once (over two replicas).
        for i, user in enumerate(users):
            base = (first, second)[i % 2].url
            streams[user] = asyncio.create_task(
                read_events(http, base + "/_broker/events", headers={"X-Forwarded-User": user})
            )
        order = await eventually(lambda: _full(redis_url, len(users)), what="everyone in the queue")
        assert sorted(order) == sorted(users)

        async def served() -> set[str]:
            return {u for u, task in streams.items() if task.done()}

        # The three pods the burst starts go to the first three in line, nobody else.
        await eventually(lambda: _count(served, 3), 30, "three pods claimed")
        await asyncio.sleep(1.0)  # time for a wrong claim to show up, were there one
        assert await served() == set(order[:3])
        for user in order[:3]:
            assert streams[user].result()[-1] == ("ready", {"next": "/"})

        # A newcomer queues behind everyone already waiting.
        streams["late"] = asyncio.create_task(
            read_events(http, second.url + "/_broker/events", headers={"X-Forwarded-User": "late"})
        )
        await eventually(lambda: _full(redis_url, 7), what="the newcomer in line")
        assert (await queue_order(redis_url))[-1] == "late"

        # Sessions end: the next three in line, in order, get the fresh pods.
        for user in order[:3]:
            status, done = await api.call("POST", f"/sessions/{user}/reclaim")
            assert status == 200, done
        await eventually(lambda: _count(served, 6), 30, "three more claimed")
        await asyncio.sleep(1.0)
        assert await served() == set(order[:6])
        assert await queue_order(redis_url) == [*order[6:], "late"]
    finally:
        for task in streams.values():
            task.cancel()
        await asyncio.gather(*streams.values(), return_exceptions=True)
        await http.close()
        await root.close()


async def _full(url: str, size: int) -> list[str] | None:
    order = await queue_order(url)
    return order if len(order) == size else None


async def _count(served, n: int) -> bool:
    return len(await served()) >= n


async def test_an_open_stream_or_a_reload_keeps_the_place_and_leaving_gives_it_up(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 1})
    broker = brokers(fleet=fleet, SDB_QUEUE_GRACE="2s", **HEADER_ENV)
    people = {
        name: Person(broker.url, header_user=name)
        for name in ("root", "holder", "leaver", "reloader", "stayer")
    }
    stream: asyncio.Task | None = None
    reloading: asyncio.Task | None = None
    try:
        token, _ = await people["root"].admin_token()
        api = Api(people["root"].http, broker.url, token)
        await eventually(people["holder"].whoami, what="the holder's WebUI")

        # Scripts while waiting: 503, Retry-After, and where to follow the wait.
        for name in ("leaver", "reloader", "stayer"):
            async with people[name].http.get(broker.url + "/sdapi/v1/progress") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
                body = await resp.json()
                assert body["error"] == "No WebUI ready yet" and body["phase"] == "full"
        assert body["position"] == 3 and body["queue"] == 3
        assert await queue_order(redis_url) == ["leaver", "reloader", "stayer"]

        async def reload_every_second() -> None:
            while True:
                async with people["reloader"].http.get(broker.url + "/stub/whoami") as resp:
                    if resp.status == 200:
                        return
                await asyncio.sleep(1.0)

        reloading = asyncio.create_task(reload_every_second())
        stream = asyncio.create_task(
            read_events(people["stayer"].http, broker.url + "/_broker/events", timeout=60)
        )
        await asyncio.sleep(3.5)  # longer than the grace: the leaver is gone, the others are not
        assert (await api.call("POST", "/sessions/holder/reclaim"))[0] == 200
        await asyncio.wait_for(reloading, 30)  # the reloader is next, not the stayer
        assert not stream.done()
        assert await queue_order(redis_url) == ["stayer"]  # the leaver lost their place

        assert (await api.call("POST", "/sessions/reloader/reclaim"))[0] == 200
        events = await asyncio.wait_for(stream, 30)
        statuses = [data for kind, data in events if kind == "status"]
        positions = [s["position"] for s in statuses]
        assert positions[0] == 3 and positions[-1] == 1  # moved up as others went
        assert positions == sorted(positions, reverse=True)
        assert events[-1][0] == "ready"
        assert (await people["stayer"].whoami())["user"] == "stayer"  # type: ignore[index]
        assert await people["leaver"].whoami() is None  # back at the end of the line now
    finally:
        for task in (stream, reloading):
            if task is not None:
                task.cancel()
        for person in people.values():
            await person.close()
