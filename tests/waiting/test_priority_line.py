"""Priority between groups in the waiting line (issue 19, section 3) against a real Redis:
the line is served by (priority desc, join time asc) through claim.lua, the Agones reserve
path and join_queue, while the join time everybody reads stays the real one; the line's
two keys (queue, queue-order) hold the same users through a whole join/leave/claim/drop
cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleet import (
    Claim,
    FleetStore,
    Limited,
    Phase,
    PodRecord,
    Queued,
    connect_redis,
    keys,
)
from fleet.model import Allocate
from fleet.store.claims import GroupBars
from tests.support.clock import StepClock

#: A join time of today's size with a fraction: what a double can and cannot hold matters.
T0 = 1_796_000_000.123456


class Clock(StepClock):
    def __init__(self, now: float = T0) -> None:
        super().__init__(now)


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def waited() -> list[tuple[str, float | None]]:
    return []


@pytest.fixture
async def store(
    redis_url: str, clock: Clock, waited: list[tuple[str, float | None]]
) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    store = FleetStore(redis, clock=clock, on_claim=lambda p, w: waited.append((p, w)))
    await store.mark_built()
    yield store
    await redis.aclose()


async def ready_pod(store: FleetStore, pod: str) -> None:
    assert await store.add_pod(pod, "default", 10)
    assert await store.mark_ready(pod, "default", f"127.0.0.1:{9000 + len(pod)}")


async def both_keys(store: FleetStore) -> tuple[set[str], set[str]]:
    line = await store.redis.zrange(keys.queue("default"), 0, -1)
    order = await store.redis.zrange(keys.queue_order("default"), 0, -1)
    return {str(u) for u in line}, {str(u) for u in order}


async def test_a_later_arrival_of_higher_priority_is_served_first(
    store: FleetStore, clock: Clock, waited: list[tuple[str, float | None]]
) -> None:
    """A student waits; staff (priority 10) arrive 7 s later and go first: the student's
    position grows 1 -> 2, the Ready pod is the staff member's, then the student is 1 again.
    Join times read back (console, wait metric) are the real ones, unshifted."""
    assert await store.claim("student", "default", queue_grace=60) == Queued("default", 1, 1)
    student_joined = clock.now
    clock.now += 7.25
    staff = await store.claim("staff", "default", queue_grace=60, priority=10)
    assert staff == Queued("default", 1, 2)
    assert await store.see_waiting("student", "default") == (2, 2)
    line = await store.queue_members("default")
    assert [(w.user, w.priority) for w in line] == [("staff", 10), ("student", 0)]
    assert [w.joined for w in line] == [T0 + 7.25, student_joined]  # exactly, as joined
    assert await store.redis.zscore(keys.queue("default"), "staff") == T0 + 7.25

    await ready_pod(store, "pod-1")
    clock.now += 3
    # The student asks first, but one pod and one person ahead: they wait.
    assert await store.claim("student", "default", queue_grace=60) == Queued("default", 2, 2)
    got = await store.claim("staff", "default", queue_grace=60, priority=10)
    assert isinstance(got, Claim) and got.new and got.pod == "pod-1"
    assert waited == [("default", 3.0)]  # the wait metric: now - the real join time
    assert await store.see_waiting("student", "default") == (1, 1)
    assert await both_keys(store) == ({"student"}, {"student"})


async def test_equal_priorities_keep_first_come_first_served_to_the_microsecond(
    store: FleetStore, clock: Clock
) -> None:
    """Within a priority, join order is kept for joins 1 us apart (what a unix time with a
    fraction resolves), for raised and lowered priorities alike; the place a person joined
    with stays theirs even when their groups say otherwise later."""
    # Names in reverse order of arrival: Redis orders equal scores by name, so a tie (a lost
    # microsecond) would show.
    joined = {"zed": 5, "yan": -5, "xia": 5, "wu": -5, "vic": 0, "uma": 5, "tom": 0}
    for user, priority in joined.items():
        await store.claim(user, "default", queue_grace=60, priority=priority)
        clock.now += 1e-6
    line = await store.queue_members("default")
    assert [w.user for w in line] == ["zed", "xia", "uma", "vic", "tom", "yan", "wu"]
    assert {w.user: w.priority for w in line} == joined
    # A person in line who comes back with another priority keeps the place they had.
    again = await store.claim("wu", "default", queue_grace=60, priority=50)
    assert again == Queued("default", 7, 7)


async def test_the_reserve_path_honours_the_order(store: FleetStore, clock: Clock) -> None:
    """Agones (reserve=True): with one Ready pod, the student who waited longer is told to
    wait and the staff member is told "go" with their real join time; a newcomer of a still
    higher priority goes ahead of both; join_queue (the platform had nothing) files people
    in the same order, and bind.lua takes the person out of both keys."""
    assert await store.claim("student", "default", queue_grace=60, reserve=True) == Queued(
        "default", 1, 1
    )
    clock.now += 1
    staff_joined = clock.now
    assert await store.join_queue("staff", "default", priority=10) == Queued("default", 1, 2)
    await ready_pod(store, "gs-1")
    clock.now += 1
    assert await store.claim("student", "default", queue_grace=60, reserve=True) == Queued(
        "default", 2, 2
    )
    go = await store.claim("staff", "default", queue_grace=60, reserve=True, priority=10)
    assert isinstance(go, Allocate) and float(go.queued_at) == staff_joined
    boss = await store.claim("boss", "default", queue_grace=60, reserve=True, priority=20)
    assert isinstance(boss, Allocate) and boss.queued_at == ""  # nobody of 20 or more ahead
    rec = PodRecord("gs-1", "default", Phase.READY, addr="127.0.0.1:9001")
    bound = await store.bind("staff", rec)
    assert isinstance(bound, Claim) and bound.new
    assert await both_keys(store) == ({"student"}, {"student"})


async def test_both_keys_agree_through_join_leave_refusal_drop_and_claim(
    store: FleetStore, clock: Clock
) -> None:
    """No orphan order entry: every way out of line takes both keys, and the controller's
    pass (drop_waiters.lua) mends what a broker that knows only `queue` wrote."""
    for user, priority in (("a", 0), ("b", 3), ("c", 1), ("d", 0)):
        await store.claim(user, "default", queue_grace=60, priority=priority)
        clock.now += 1
    assert await both_keys(store) == ({"a", "b", "c", "d"},) * 2
    await store.leave_queue("c", "default")  # chose another kind
    assert await both_keys(store) == ({"a", "b", "d"},) * 2
    bars = GroupBars(spent={"night": (1.0, 1.5)})  # a spent budget: refused, out of line
    assert isinstance(await store.claim("d", "default", queue_grace=60, bars=bars), Limited)
    assert await both_keys(store) == ({"a", "b"},) * 2
    # An older broker queued "old" (join time only); an order entry lost its user.
    await store.redis.zadd(keys.queue("default"), {"old": T0 - 5})
    await store.redis.zadd(keys.queue_order("default"), {"stray": T0})
    clock.now += 30
    await store.see_waiting("b", "default")
    await store.redis.zadd(keys.queue_seen("default"), {"old": clock.now})
    clock.now += 40  # a: 73 s unseen, b: 40 s
    assert await store.drop_gone_waiters("default", 60) == ["a"]
    assert await both_keys(store) == ({"b", "old"},) * 2
    assert [(w.user, w.priority) for w in await store.queue_members("default")] == [
        ("b", 3),
        ("old", 0),
    ]
    await ready_pod(store, "pod-1")
    got = await store.claim("b", "default", queue_grace=60)
    assert isinstance(got, Claim) and got.new
    assert await both_keys(store) == ({"old"},) * 2
    await store.see_waiting("old", "default")
    clock.now += 61
    assert await store.drop_gone_waiters("default", 60) == ["old"]
    assert await both_keys(store) == (set(), set())
