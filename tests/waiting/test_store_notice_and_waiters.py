"""The queue and ended-notice scripts against a real Redis (issue 17, items 1 and 8).

The browser and broker tests show the behaviour; these pin the scripts' edges.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from fleet import Claim, FleetStore, SessionEnded, Tell, Waiting, connect_redis, keys
from tests.support.clock import StepClock

Clock = StepClock


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
    await store.redis.zadd(keys.queue_order("default"), {"ghost": clock.now - 100})
    assert await store.see_waiting("stays", "default") == (3, 4)  # the ghost came first
    clock.now += 35  # gone: 125 s unseen; stays: 35 s; late: 65 s; ghost: 135 s
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    dropped = await store.drop_gone_waiters("default", 60)
    assert sorted(dropped) == ["ghost", "gone", "late"]
    assert [w.user for w in await store.queue_members("default")] == ["stays"]
    assert not await store.redis.zscore(keys.queue_seen("default"), "gone")
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert message is not None and message["data"] == "queue default"  # positions changed
    assert await store.drop_gone_waiters("default", 60) == []  # nothing left to drop
    await pubsub.aclose()


async def leave_notice(store: FleetStore, user: str) -> None:
    await store.redis.set(keys.ended(user), json.dumps({"reason": "idle"}), ex=60)


async def test_the_notice_stops_a_new_claim_not_an_existing_one(store: FleetStore) -> None:
    assert await store.add_pod("default-1", "default", 10)
    assert await store.mark_ready("default-1", "default", "http://127.0.0.1:20001")
    claim = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(claim, Claim)
    await leave_notice(store, "ann")  # about an older session
    again = await store.claim("ann", "default", queue_grace=60, unless_ended=True)
    assert isinstance(again, Claim) and again.pod == claim.pod
    # A page load with a claim: routed to it, and the stale notice is dropped.
    assert await store.unread_ended("ann") is None
    assert not await store.redis.exists(keys.ended("ann"))

    await leave_notice(store, "bob")  # no claim: the notice holds
    refused = await store.claim("bob", "default", queue_grace=60, unless_ended=True)
    assert isinstance(refused, SessionEnded)
    assert await store.unread_ended("bob") == {"reason": "idle"}
    assert await store.redis.exists(keys.ended("bob"))  # reading it does not use it up


async def claimed_pod(store: FleetStore, user: str, pod: str) -> Claim:
    assert await store.add_pod(pod, "default", 10)
    assert await store.mark_ready(pod, "default", "http://127.0.0.1:20001")
    claim = await store.claim(user, "default", queue_grace=60)
    assert isinstance(claim, Claim) and claim.pod == pod
    return claim


async def test_ending_a_session_leaves_the_notice_in_the_same_script(
    store: FleetStore, clock: Clock
) -> None:
    """Issue 17's last race: end_pod, then the notice a round trip later, let an open
    tab's poll in between claim a new pod. Now nothing is called after end_pod: the
    claim is gone and the notice is there in one step, so the very next claim of a
    poll is refused. (Before, end_pod alone left no notice and this claim took a pod.)"""
    await claimed_pod(store, "ann", "default-1")
    assert await store.add_pod("default-2", "default", 10)  # a free pod a poll could take
    assert await store.mark_ready("default-2", "default", "http://127.0.0.1:20002")
    clock.now += 200  # ann active at claim time, then 200 s quiet
    await store.redis.zadd(keys.ACTIVITY, {"ann": clock.now - 130})  # last seen 130 s ago
    tell = Tell("reaper", "x" * 500, limit=43200, notice_ttl=60)
    ended = await store.end_pod("default-1", "idle", only_user="ann", tell=tell)
    assert ended is not None and ended.user == "ann"

    refused = await store.claim("ann", "default", queue_grace=60, unless_ended=True)
    assert isinstance(refused, SessionEnded)
    assert (await store.counts("default"))["ready"] == 1  # the free pod is still free
    notice = await store.unread_ended("ann")
    assert notice == {
        "reason": "idle",
        "idle_seconds": 130,
        "session_seconds": 200,
        "limit_seconds": 43200,
        "pod": "default-1",
        "profile": "default",
        "at": clock.now,
    }
    assert 0 < await store.redis.ttl(keys.ended("ann")) <= 60
    [event] = await store.recent_audit()
    assert event["user"] == "ann" and event["pod"] == "default-1" and event["by"] == "reaper"
    assert event["reason"] == "idle" and event["idle_seconds"] == "130"
    assert event["session_seconds"] == "200" and event["detail"] == "x" * 200
    assert float(event["at"]) == clock.now


async def test_a_dropped_claim_leaves_the_notice_and_a_silent_end_leaves_none(
    store: FleetStore, clock: Clock
) -> None:
    await claimed_pod(store, "ann", "default-1")
    await store.redis.delete(keys.pod("default-1"))  # the pod's record is gone
    clock.now += 60
    tell = Tell("reaper")
    assert await store.drop_claim("ann", "default-1", "dead", tell) == 1
    notice = await store.unread_ended("ann")
    assert notice is not None and notice["reason"] == "dead"
    assert notice["session_seconds"] == 60 and "limit_seconds" not in notice
    [event] = await store.recent_audit()
    assert event["by"] == "reaper" and "detail" not in event

    # A pod ended without a tell (scale-down of a Ready pod, a shutdown) tells nobody.
    await claimed_pod(store, "bob", "default-3")
    assert await store.end_pod("default-3", "shutdown") is not None
    assert await store.unread_ended("bob") is None
    assert len(await store.recent_audit()) == 1
