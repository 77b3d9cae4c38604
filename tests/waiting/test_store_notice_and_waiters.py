"""The queue and ended-notice scripts against a real Redis (issue 17, items 1 and 8).

The browser and broker tests show the behaviour; these pin the scripts' edges.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleet import Claim, FleetStore, SessionEnded, Waiting, connect_redis, keys


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(redis_url: str, clock: Clock) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    store = FleetStore(redis, clock=clock)
    await store.mark_built()
    yield store
    await redis.aclose()


async def test_waiters_unseen_past_the_grace_are_dropped_the_others_kept(
    store: FleetStore, clock: Clock
) -> None:
    for user in ("gone", "stays", "late"):
        assert isinstance(await store.claim(user, "default", queue_grace=60), Waiting)
        clock.now += 30
    # Someone in line with no sign of life at all counts from when they joined.
    await store.redis.zadd(keys.queue("default"), {"ghost": clock.now - 100})
    assert await store.see_waiting("stays", "default") == (3, 4)  # the ghost came first
    clock.now += 35  # gone: 125 s unseen; stays: 35 s; late: 65 s; ghost: 135 s
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    dropped = await store.drop_gone_waiters("default", 60)
    assert sorted(dropped) == ["ghost", "gone", "late"]
    assert [u for u, _, _ in await store.queue_members("default")] == ["stays"]
    assert not await store.redis.zscore(keys.queue_seen("default"), "gone")
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert message is not None and message["data"] == "queue default"  # positions changed
    assert await store.drop_gone_waiters("default", 60) == []  # nothing left to drop
    await pubsub.aclose()


async def test_the_notice_stops_a_new_claim_not_an_existing_one(store: FleetStore) -> None:
    assert await store.add_pod("default-1", "default", 10)
    assert await store.mark_ready("default-1", "default", "http://127.0.0.1:20001")
    claim = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(claim, Claim)
    await store.record_reclaim(
        {"user": "ann", "reason": "idle"}, {"reason": "idle"}, 60
    )  # about an older session
    again = await store.claim("ann", "default", queue_grace=60, unless_ended=True)
    assert isinstance(again, Claim) and again.pod == claim.pod
    # A page load with a claim: routed to it, and the stale notice is dropped.
    assert await store.unread_ended("ann") is None
    assert not await store.redis.exists(keys.ended("ann"))

    await store.record_reclaim(
        {"user": "bob", "reason": "idle"}, {"reason": "idle"}, 60
    )  # no claim: the notice holds
    refused = await store.claim("bob", "default", queue_grace=60, unless_ended=True)
    assert isinstance(refused, SessionEnded)
    assert await store.unread_ended("bob") == {"reason": "idle"}
    assert await store.redis.exists(keys.ended("bob"))  # reading it does not use it up
