"""fleet.yaml's `groups:` (issue 19, section 3) through real brokers, a real Redis and header
login with X-Forwarded-Groups: a group's max_sessions holds across two brokers under
concurrent first requests, a person held by it gets a page that says who, which group, the
limit and how many are in use (a script 429 JSON), and nobody is put in line for it; a
session's end frees its place; a spent daily_gpu_hours budget stops new sessions only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from fleet import Claim, FleetStore, Limited, Phase, PodRecord, connect_redis, keys
from fleet.store.claims import GroupBars
from tests.admin.support import Api, Person, eventually, fleet_file, read_events

HEADER_ENV = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_ADMIN_USERS": "root",
}


def limited_fleet(tmp_path: Path, groups: str, **profile: object) -> Path:
    """A local fleet of stub WebUIs with the `groups:` block `groups` (YAML lines)."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", profile)
    fleet.write_text(fleet.read_text() + "groups:\n" + groups)
    return fleet


async def ready_pods(url: str, count: int) -> bool:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        return await client.zcard(keys.ready("default")) >= count
    finally:
        await client.aclose()


async def test_two_brokers_admit_no_more_than_the_groups_limit(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """Five students' first requests at once, over two brokers, five warm pods, a limit of
    two: exactly two are served (both brokers count in the one claim script), three are
    refused with 429 JSON, and none of the three holds a pod or a place in line."""
    fleet = limited_fleet(tmp_path, "  students: {max_sessions: 2}\n", buffer=5, max=5)
    first, second = brokers(fleet=fleet, **HEADER_ENV), brokers(fleet=fleet, **HEADER_ENV)
    await eventually(lambda: ready_pods(redis_url, 5), 40, "five warm pods")
    users = [f"student-{i}" for i in range(5)]
    client = aioredis.from_url(redis_url, decode_responses=True)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def ask(i: int, user: str) -> tuple[str, int, dict[str, object]]:
            base = (first, second)[i % 2].url
            headers = {"X-Forwarded-User": user, "X-Forwarded-Groups": "students, staff",
                       "Accept": "application/json"}  # fmt: skip
            async with http.get(base + "/sdapi/v1/options", headers=headers) as resp:
                body = await resp.json() if resp.status == 429 else {}
                return user, resp.status, body

        answers = await asyncio.gather(*(ask(i, u) for i, u in enumerate(users)))
    try:
        served = {u for u, status, _ in answers if status == 200}
        refused = [(u, body) for u, status, body in answers if status == 429]
        assert len(served) == 2 and len(refused) == 3, answers
        for user, body in refused:
            assert body["group"] == "students" and body["user"] == user
            assert (body["limit"], body["allowed"], body["in_use"]) == ("sessions", 2, 2)
            assert not await client.exists(keys.claim(user))
        assert await client.smembers(keys.group_holders("students")) == served
        assert await client.smembers(keys.group_holders("staff")) == served
        assert await client.zcard(keys.queue("default")) == 0
    finally:
        await client.aclose()


async def test_the_limit_page_and_a_place_freed_by_a_sessions_end(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = limited_fleet(tmp_path, "  students: {max_sessions: 1}\n", buffer=2, max=3)
    broker = brokers(fleet=fleet, **HEADER_ENV)
    ann, bob = Person(broker.url, header_user="ann"), Person(broker.url, header_user="bob")
    cat, root = Person(broker.url, header_user="cat"), Person(broker.url, header_user="root")
    student = {"X-Forwarded-Groups": "students"}
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await eventually(lambda: ready_pods(redis_url, 2), 40, "two warm pods")
        status, _, _ = await ann.page("/", headers=student)
        assert status == 200
        status, path, page = await bob.page("/", headers=student)
        assert (status, path) == (429, "/")
        assert "WebUIs are all in use" in page
        assert (
            '<strong id="user">bob</strong>' in page
            and '<strong id="group">students</strong>' in page
        )
        assert "may hold 1 WebUI at once, and 1 is in use" in page
        assert "Try again later" in page and "ask an administrator" in page
        assert "Traceback" not in page
        assert not await client.exists(keys.claim("bob"))
        assert await client.zscore(keys.queue("default"), "bob") is None
        # The waiting page (a bookmark) says the same; nobody waits in line for a limit.
        status, _, page = await bob.page("/_broker/wait?next=/", headers=student)
        assert status == 429 and "may hold 1 WebUI at once" in page
        # Someone outside the group is not held by it.
        assert (await cat.page("/", headers={"X-Forwarded-Groups": "staff"}))[0] == 200

        token, _ = await root.admin_token()
        status, done = await Api(root.http, broker.url, token).call("POST", "/sessions/ann/reclaim")
        assert status == 200, done
        assert await client.smembers(keys.group_holders("students")) == set()
        await eventually(lambda: ready_pods(redis_url, 1), 40, "a warm pod again")
        status, _, _ = await bob.page("/", headers=student)
        assert status == 200
        assert await client.smembers(keys.group_holders("students")) == {"bob"}
    finally:
        await client.aclose()
        for person in (ann, bob, cat, root):
            await person.close()


async def test_a_spent_budget_stops_new_sessions_not_running_ones(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """carl starts a session, then the group's day is spent (an ended 1.5-hour session of a
    member, as the audit stream keeps it): on a broker that reads the usage now, dan of the
    same group gets the budget page, carl keeps his WebUI, eve of another group gets one."""
    fleet = limited_fleet(tmp_path, "  night: {daily_gpu_hours: 1}\n", buffer=3, max=4)
    first = brokers(fleet=fleet, **HEADER_ENV)
    night = {"X-Forwarded-Groups": "night"}
    carl = Person(first.url, header_user="carl")
    client = aioredis.from_url(redis_url, decode_responses=True)
    people = [carl]
    try:
        await eventually(lambda: ready_pods(redis_url, 3), 40, "three warm pods")
        assert (await carl.page("/", headers=night))[0] == 200
        await client.xadd(keys.AUDIT, {"user": "old", "groups": json.dumps(["night"]),
                                        "profile": "default", "session_seconds": "5400",
                                        "at": repr(time.time())})  # fmt: skip
        second = brokers(fleet=fleet, **HEADER_ENV)  # its first budget read sees the spent day
        dan, eve = Person(second.url, header_user="dan"), Person(second.url, header_user="eve")
        carl_there = Person(second.url, header_user="carl")
        people += [dan, eve, carl_there]
        status, _, page = await dan.page("/", headers=night)
        assert status == 429
        assert "GPU time for today is used up" in page
        assert (
            "may use 1 GPU-hours in any 24 hours" in page
            and '<strong id="user">dan</strong>' in page
        )
        async with dan.http.get(second.url + "/sdapi/v1/options", headers=night) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "600"
            body = await resp.json()
        assert (body["group"], body["limit"], body["allowed"]) == ("night", "budget", 1)
        assert body["in_use"] >= 1.5
        assert not await client.exists(keys.claim("dan"))
        assert (await carl_there.page("/", headers=night))[0] == 200  # running: not cut
        assert (await eve.page("/", headers={"X-Forwarded-Groups": "day"}))[0] == 200
    finally:
        await client.aclose()
        for person in people:
            await person.close()


async def test_bind_looks_again_and_a_stale_holder_holds_no_place(redis_url: str) -> None:
    """Agones: claim.lua said "go" to two people for one last place; bind.lua, which records
    what the platform allocated, refuses the second and writes nothing. A holder whose claim
    was deleted by some other path (here: by hand) is dropped when the set is counted."""
    redis = connect_redis(redis_url)
    store = FleetStore(redis)
    await store.mark_built()
    bars = GroupBars(sessions=(("interns", 1),))
    try:

        def allocated(pod: str) -> PodRecord:
            return PodRecord(pod, "default", Phase.READY, addr="http://127.0.0.1:9")

        ann = await store.bind("ann", allocated("gs-1"), ["interns"], bars)
        assert isinstance(ann, Claim) and ann.pod == "gs-1"
        bob = await store.bind("bob", allocated("gs-2"), ["interns", "staff"], bars)
        assert bob == Limited("default", "sessions", "interns", 1, 1)
        assert not await redis.exists(keys.claim("bob"), keys.pod("gs-2"))
        assert await redis.smembers(keys.group_holders("interns")) == {"ann"}

        await redis.delete(keys.claim("ann"))  # gone without end_pod: ann's place is stale
        bob_again = await store.bind("bob", allocated("gs-2"), ["interns", "staff"], bars)
        assert isinstance(bob_again, Claim) and bob_again.new
        assert await redis.smembers(keys.group_holders("interns")) == {"bob"}
        assert await redis.smembers(keys.group_holders("staff")) == {"bob"}
        ended = await store.end_pod("gs-2", "admin")
        assert ended is not None and ended.user == "bob"
        assert not await redis.exists(keys.group_holders("interns"), keys.group_holders("staff"))
    finally:
        await redis.aclose()


async def test_a_waiting_member_leaves_the_line_when_the_group_fills(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """ann and bob of `students` (limit 1) wait in line for the one pod cat holds; when it
    frees, ann gets it, and bob's open waiting page is told to reload (the limit page)
    instead of keeping a place nobody would ever give him."""
    fleet = limited_fleet(tmp_path, "  students: {max_sessions: 1}\n", buffer=1, max=1)
    broker = brokers(fleet=fleet, **HEADER_ENV)
    cat, root = Person(broker.url, header_user="cat"), Person(broker.url, header_user="root")
    bob_later = Person(broker.url, header_user="bob")
    client = aioredis.from_url(redis_url, decode_responses=True)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    events = broker.url + "/_broker/events"
    try:
        await eventually(lambda: ready_pods(redis_url, 1), 40, "the warm pod")
        assert (await cat.page("/", headers={"X-Forwarded-Groups": "staff"}))[0] == 200

        def waits(user: str, until: str) -> asyncio.Task[list[tuple[str, dict[str, object]]]]:
            headers = {"X-Forwarded-User": user, "X-Forwarded-Groups": "students"}
            return asyncio.create_task(
                read_events(http, events, headers=headers, until=until, timeout=60)
            )

        async def in_line(count: int) -> bool:
            return await client.zcard(keys.queue("default")) == count

        ann = waits("ann", "ready")
        await eventually(lambda: in_line(1), what="ann in line")
        bob = waits("bob", "ended")
        await eventually(lambda: in_line(2), what="bob in line")

        token, _ = await root.admin_token()
        status, done = await Api(root.http, broker.url, token).call("POST", "/sessions/cat/reclaim")
        assert status == 200, done
        assert (await asyncio.wait_for(ann, 60))[-1][0] == "ready"
        assert (await asyncio.wait_for(bob, 60))[-1] == ("ended", {"next": "/"})
        assert await client.zrange(keys.queue("default"), 0, -1) == []
        page_status, _, page = await bob_later.page(
            "/_broker/wait?next=/", headers={"X-Forwarded-Groups": "students"}
        )
        assert page_status == 429 and "may hold 1 WebUI at once, and 1 is in use" in page
    finally:
        await http.close()
        await client.aclose()
        for person in (cat, root, bob_later):
            await person.close()
