"""Priority between groups in the waiting line (issue 19, section 3) through two real
brokers, a real Redis and header login with X-Forwarded-Groups: staff (fleet.yaml
`groups: staff: {priority: 10}`) who arrive after a student are served first; the student's
waiting page and event stream show their place going back, never forward; the admin API
lists the line in serving order with each waiter's priority and real join time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from fleet import keys
from tests.admin.support import Api, Person, element, eventually, read_events
from tests.waiting.test_group_limits import HEADER_ENV, limited_fleet, ready_pods


async def test_staff_who_arrive_later_are_served_before_a_waiting_student(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = limited_fleet(tmp_path, "  staff: {priority: 10}\n", buffer=1, max=1)
    first, second = brokers(fleet=fleet, **HEADER_ENV), brokers(fleet=fleet, **HEADER_ENV)
    cat, root = Person(first.url, header_user="cat"), Person(first.url, header_user="root")
    sam = Person(first.url, header_user="sam")  # the student's own tab, on the first broker
    students = {"X-Forwarded-Groups": "students"}
    client = aioredis.from_url(redis_url, decode_responses=True)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    tasks: list[asyncio.Task[list[tuple[str, dict[str, object]]]]] = []

    def waits(base: str, user: str, groups: str) -> asyncio.Task:
        headers = {"X-Forwarded-User": user, "X-Forwarded-Groups": groups}
        task = asyncio.create_task(
            read_events(http, base + "/_broker/events", headers=headers, timeout=120)
        )
        tasks.append(task)
        return task

    async def in_line(count: int) -> bool:
        return await client.zcard(keys.queue_order("default")) == count

    async def place_of_sam() -> str:
        status, _, page = await sam.page("/_broker/wait?next=/", headers=students)
        assert status == 503, page
        return element(page, "position")

    try:
        await eventually(lambda: ready_pods(redis_url, 1), 40, "the warm pod")
        assert (await cat.page("/", headers={"X-Forwarded-Groups": "staff"}))[0] == 200
        student = waits(first.url, "sam", "students")
        await eventually(lambda: in_line(1), what="the student in line")
        assert await place_of_sam() == "1"
        staff = waits(second.url, "tess", "staff, students")  # later, on the other broker
        await eventually(lambda: in_line(2), what="the staff member in line")
        assert await place_of_sam() == "2"

        token, _ = await root.admin_token()
        api = Api(root.http, first.url, token)
        status, line = await api.call("GET", "/queue")
        assert status == 200, line
        assert [(w["user"], w["position"], w["priority"]) for w in line] == [
            ("tess", 1, 10),
            ("sam", 2, 0),
        ]
        assert line[1]["joined"] < line[0]["joined"]  # the student came first, really
        assert line[1]["joined"] == await client.zscore(keys.queue("default"), "sam")
        _, _, console = await root.page("/_broker/admin")
        assert console.index("<td>tess</td>") < console.index("<td>sam</td>")

        status, done = await api.call("POST", "/sessions/cat/reclaim")
        assert status == 200, done
        assert (await asyncio.wait_for(staff, 90))[-1][0] == "ready"
        assert not student.done()
        await eventually(lambda: in_line(1), what="the staff member out of line")
        assert await place_of_sam() == "1"

        status, done = await api.call("POST", "/sessions/tess/reclaim")
        assert status == 200, done
        events = await asyncio.wait_for(student, 90)
        assert events[-1][0] == "ready"
        said = [data for kind, data in events if kind == "status"]
        places = [s["position"] for s in said]
        grew = places.index(2)
        assert places[0] == 1 and places[grew - 1] == 1, places
        assert "went back" in str(said[grew]["message"])
        assert "ahead of you" in str(said[grew]["message"])
        assert all("went back" not in str(s["message"]) for s in said[:grew])
        assert await client.zcard(keys.queue("default")) == 0
        assert await client.zcard(keys.queue_order("default")) == 0
    finally:
        for task in tasks:
            task.cancel()
        await http.close()
        await client.aclose()
        for person in (cat, root, sam):
            await person.close()
