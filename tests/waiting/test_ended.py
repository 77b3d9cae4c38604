"""The "session ended" notice stops only a NEW claim (issue 17, item 8), through real brokers.

Route caches are per process: after a reclaim, a user whose new pod was
claimed through one process (a script's GET /, which counts as activity and
so may start a session) must be routed to it by every other process too,
not told "Your session ended" by those whose cache is empty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file

HEADER_ENV = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_ADMIN_USERS": "root",
}
ANN = {"X-Forwarded-User": "ann"}


async def whoami(http: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    """(status, pod id or the error) of GET /stub/whoami: not user activity."""
    async with http.get(base + "/stub/whoami", headers=ANN) as resp:
        if resp.status == 200:
            return 200, (await resp.json())["pod"]
        return resp.status, (await resp.json(content_type=None)).get("error", "")


async def reclaim_then_claim_again(
    root: Person, first: str, redis_url: str, http: aiohttp.ClientSession
) -> tuple[str, str]:
    """ann gets a pod through `first`, an admin reclaims it (leaving the notice), then a
    script's GET / through `first` claims a new one: (old pod, new pod)."""

    async def pod_through_root() -> str | None:
        async with http.get(first + "/", headers=ANN) as resp:
            await resp.read()
        status, pod = await whoami(http, first)
        return pod if status == 200 else None

    old = await eventually(pod_through_root, 30, "ann's first WebUI")
    token, _ = await root.admin_token()
    status, body = await Api(root.http, first, token).call("POST", "/sessions/ann/reclaim")
    assert status == 200, body
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.exists(keys.ended("ann"))  # the notice is there, unread
        new = await eventually(pod_through_root, 30, "ann's new WebUI")
        assert await client.exists(keys.ended("ann"))  # a script's GET / does not read it
    finally:
        await client.aclose()
    assert new != old
    return old, new


async def test_two_brokers_route_a_new_claim_despite_an_unread_notice(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 3})
    first, second = brokers(fleet=fleet, **HEADER_ENV), brokers(fleet=fleet, **HEADER_ENV)
    root = Person(first.url, header_user="root")
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            _, new = await reclaim_then_claim_again(root, first.url, redis_url, http)
            # The second broker has never routed ann: every request is a cache miss there.
            answers = [await whoami(http, second.url) for _ in range(8)]
            assert answers == [(200, new)] * 8, f"{[s for s, _ in answers].count(409)} of 8 got 409"
    finally:
        await root.close()


async def test_two_workers_route_a_new_claim_despite_an_unread_notice(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """SDB_WORKERS=2: the kernel spreads new connections over both workers' caches."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 3})
    broker = brokers(fleet=fleet, SDB_WORKERS="2", **HEADER_ENV)
    root = Person(broker.url, header_user="root")
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection, a fresh pick
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            _, new = await reclaim_then_claim_again(root, broker.url, redis_url, http)
            answers = await asyncio.gather(*(whoami(http, broker.url) for _ in range(16)))
            assert answers == [(200, new)] * 16, (
                f"{[s for s, _ in answers].count(409)} of 16 got 409"
            )
    finally:
        await root.close()


async def test_without_a_claim_the_notice_still_stops_background_requests(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """The other half: no claim, unread notice -> 409 and nothing claimed or queued."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 3})
    broker = brokers(fleet=fleet, **HEADER_ENV)
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await client.set(keys.ended("ann"), '{"reason": "admin"}', ex=600)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                assert (await whoami(http, broker.url))[0] == 409
        assert not await client.exists(keys.claim("ann"))
        assert not await client.zcard(keys.queue("default"))
    finally:
        await client.aclose()


async def test_the_waiting_page_and_its_stream_claim_nothing_while_the_notice_is_unread(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """A waiting page reloaded (or left open) after the session ended elsewhere: the page
    shows the ended page, its event stream says `ended`, and neither claims a pod.
    Before, both claimed a new WebUI for a person who had not asked for one."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 3})
    broker = brokers(fleet=fleet, **HEADER_ENV)
    client = aioredis.from_url(redis_url, decode_responses=True)
    html = {**ANN, "Accept": "text/html"}
    try:
        await client.set(keys.ended("ann"), '{"reason": "admin"}', ex=600)
        async with aiohttp.ClientSession() as http:
            async with http.get(broker.url + "/_broker/wait?next=/", headers=html) as resp:
                page = await resp.text()
            assert "Start a new WebUI" in page and "An administrator ended your session" in page
            async with http.get(broker.url + "/_broker/events?next=/", headers=ANN) as resp:
                assert resp.status == 200
                body = (await asyncio.wait_for(resp.content.read(), 10)).decode()
            assert "event: ended" in body and "event: ready" not in body
        assert not await client.exists(keys.claim("ann"))
        assert not await client.zcard(keys.queue("default"))
        assert await client.exists(keys.ended("ann"))  # still unread: the button reads it
    finally:
        await client.aclose()
