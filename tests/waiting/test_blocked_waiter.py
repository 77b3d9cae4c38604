"""A person blocked while their waiting page is open claims nothing (issue 20's last note).

The broker checks the block list before a claim (broker/blocked.py `held_back`), but a
waiting page's event stream was past that check: when a pod turned Ready it claimed it for
a blocked person. claim.lua now asks the block list itself (keys.BLOCKED), answers
`blocked`, and takes the person out of the line, so the pod goes to the next in line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from fleet import Blocked, Claim, FleetStore, Phase, PodRecord, connect_redis, keys
from tests.admin.support import Api, Person, eventually, fleet_file, read_events
from tests.waiting.test_group_limits import HEADER_ENV, ready_pods

SCOPES = ("read", "sessions")


async def test_a_person_blocked_while_waiting_does_not_get_the_next_pod(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """cat holds the one pod; ann, then bob, wait with their pages open; an admin blocks ann,
    then frees cat's pod. The new pod turns Ready: ann's page is told to reload, into the
    blocked page, and bob, behind her in line, gets the pod."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 1})
    broker = brokers(fleet=fleet, **HEADER_ENV)
    cat, root = Person(broker.url, header_user="cat"), Person(broker.url, header_user="root")
    ann_later = Person(broker.url, header_user="ann")
    client = aioredis.from_url(redis_url, decode_responses=True)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    events = broker.url + "/_broker/events?next=/"
    try:
        await eventually(lambda: ready_pods(redis_url, 1), 40, "the warm pod")
        assert (await cat.page("/"))[0] == 200
        token, _ = await root.admin_token(scopes=SCOPES)
        api = Api(root.http, broker.url, token)

        def waits(user: str, until: str) -> asyncio.Task[list[tuple[str, dict[str, object]]]]:
            headers = {"X-Forwarded-User": user}
            return asyncio.create_task(
                read_events(http, events, headers=headers, until=until, timeout=60)
            )

        async def in_line(*users: str) -> bool:
            return await client.zrange(keys.queue("default"), 0, -1) == list(users)

        ann = waits("ann", "ended")
        await eventually(lambda: in_line("ann"), what="ann in line")
        bob = waits("bob", "ready")
        await eventually(lambda: in_line("ann", "bob"), what="bob in line behind her")

        status, done = await api.call("PUT", "/users/ann/block?reason=abuse")
        assert status == 200 and done["ok"], done
        status, done = await api.call("POST", "/sessions/cat/reclaim")
        assert status == 200, done

        ann_saw = await asyncio.wait_for(ann, 60)
        assert ann_saw[-1] == ("ended", {"next": "/"}), ann_saw  # the page reloads
        assert (await asyncio.wait_for(bob, 60))[-1][0] == "ready"
        assert not await client.exists(keys.claim("ann"))
        assert await client.hget(keys.claim("bob"), "pod")
        assert await client.zrange(keys.queue("default"), 0, -1) == []
        status, _, page = await ann_later.page("/_broker/wait?next=/")
        assert status == 403 and "Access blocked" in page and "Traceback" not in page
    finally:
        await http.close()
        await client.aclose()
        for person in (cat, root, ann_later):
            await person.close()


async def test_bind_records_nothing_for_a_person_blocked_since_go(redis_url: str) -> None:
    """Agones: claim.lua said "go", the platform allocated, and an admin blocked the person
    in between: bind.lua writes no claim (the caller gives the GameServer back)."""
    redis = connect_redis(redis_url)
    store = FleetStore(redis)
    await store.mark_built()
    try:
        await store.block("ann")
        rec = PodRecord("gs-1", "default", Phase.READY, addr="http://127.0.0.1:9")
        assert await store.bind("ann", rec) == Blocked("default")
        assert not await redis.exists(keys.claim("ann"), keys.pod("gs-1"))
        assert await store.claim("ann", "default", queue_grace=60) == Blocked("default")
        await store.unblock("ann")
        assert isinstance(await store.bind("ann", rec), Claim)
    finally:
        await redis.aclose()
