"""The Redis index and its Lua scripts, against a real Redis server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

import fleet.store.pods
from fleet import (
    Claim,
    FleetStore,
    PodRecord,
    PodState,
    Rebuilding,
    SessionEnded,
    Waiting,
    connect_redis,
    keys,
)
from fleet.model import Phase


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    store = FleetStore(redis)
    await store.mark_built()
    yield store
    await redis.aclose()


async def ready_pods(store: FleetStore, n: int, profile: str = "default") -> list[str]:
    ids = []
    for i in range(n):
        pod_id = f"{profile}-{i:04d}"
        assert await store.add_pod(pod_id, profile, 10_000)
        assert await store.mark_ready(pod_id, profile, f"http://127.0.0.1:{20000 + i}")
        ids.append(pod_id)
    return ids


async def test_claim_takes_ready_pod_then_returns_it(store: FleetStore) -> None:
    await ready_pods(store, 2)
    first = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(first, Claim) and first.new
    again = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(again, Claim) and not again.new and again.pod == first.pod
    assert (await store.counts("default"))["claimed"] == 1


async def test_no_ready_pod_means_waiting_in_line(store: FleetStore) -> None:
    await ready_pods(store, 1)
    assert isinstance(await store.claim("ann", "default", queue_grace=60), Claim)
    bob = await store.claim("bob", "default", queue_grace=60)
    cat = await store.claim("cat", "default", queue_grace=60)
    assert isinstance(bob, Waiting) and bob.position == 1
    assert isinstance(cat, Waiting) and cat.position == 2
    # The next Ready pod goes to the head of the line, not to the one asking first.
    await store.add_pod("default-late", "default", 100)
    await store.mark_ready("default-late", "default", "http://127.0.0.1:1")
    assert isinstance(await store.claim("cat", "default", queue_grace=60), Waiting)
    got = await store.claim("bob", "default", queue_grace=60)
    assert isinstance(got, Claim) and got.pod == "default-late"


async def test_concurrent_claims_never_share_a_pod(store: FleetStore) -> None:
    await ready_pods(store, 50)
    users = [f"user{i}" for i in range(50)]
    results = await asyncio.gather(*(store.claim(u, "default", queue_grace=60) for u in users * 3))
    claims = [r for r in results if isinstance(r, Claim)]
    assert len(claims) == 150
    by_user: dict[str, set[str]] = {}
    for c in claims:
        by_user.setdefault(c.user, set()).add(c.pod)
    assert all(len(pods) == 1 for pods in by_user.values())
    pods = [next(iter(p)) for p in by_user.values()]
    assert len(set(pods)) == len(pods) == 50


async def test_pods_are_single_use(store: FleetStore) -> None:
    (pod,) = await ready_pods(store, 1)
    claim = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(claim, Claim)
    ended = await store.end_pod(pod, "idle", only_user="ann")
    assert ended is not None and ended.user == "ann"
    # Ending twice is a no-op: two reapers reclaim once.
    assert await store.end_pod(pod, "idle", only_user="ann") is None
    assert await store.lookup("ann") is None
    # The pod is never offered again, even if someone marks it ready.
    assert not await store.mark_ready(pod, "default", "http://x")
    assert isinstance(await store.claim("bob", "default", queue_grace=60), Waiting)
    assert pod in await store.deleting()


async def test_end_pod_compare_and_delete_checks_user(store: FleetStore) -> None:
    (pod,) = await ready_pods(store, 1)
    await store.claim("ann", "default", queue_grace=60)
    assert await store.end_pod(pod, "admin", only_user="bob") is None
    assert await store.lookup("ann") is not None


async def test_claims_wait_while_index_is_rebuilt(store: FleetStore) -> None:
    await ready_pods(store, 1)
    await store.redis.flushall()
    result = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(result, Rebuilding)
    record = PodRecord(
        id="default-x", profile="default", phase=Phase.STARTING, addr="http://a", user="bob"
    )
    assert await store.restore([record], mark_built=True) == (1, [])
    claim = await store.lookup("bob")
    assert claim is not None and claim.pod == "default-x"
    assert await store.redis.exists(keys.STATE_MARKER)


async def test_pods_come_back_whole_in_batches(
    store: FleetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.pods reads the hashes with pods.lua, one JSON text per batch of ids."""
    monkeypatch.setattr(fleet.store.pods, "PODS_PER_READ", 3)
    assert await store.pods(["default"]) == []
    ids = await ready_pods(store, 7)
    odd = 'Zoë "the \\ admin" ✓ /x'  # JSON escapes must not change a name
    claim = await store.claim(odd, "default", queue_grace=60)
    assert isinstance(claim, Claim)
    await store.set_pod_fields(ids[1], pid="123", port="4567")
    ended = await store.end_pod(ids[2], "admin")
    assert ended is not None
    pods = await store.pods(["default"])
    assert [p.id for p in pods] == ids
    by_id = {p.id: p for p in pods}
    assert by_id[claim.pod].user == odd and by_id[claim.pod].state is PodState.CLAIMED
    assert by_id[ids[1]].extra == {"pid": "123", "port": "4567"}
    assert by_id[ids[1]].addr == "http://127.0.0.1:20001" and by_id[ids[1]].ready_at > 0
    assert by_id[ids[2]].state is PodState.DELETING
    assert [p.id for p in await store.pods(["other"])] == [ids[2]]  # deleting: every profile


async def test_a_claim_unless_ended_takes_nothing_while_the_notice_is_unread(
    store: FleetStore,
) -> None:
    """The ended-notice check rides in the claim's own Lua call (no Redis call of its own)."""
    await ready_pods(store, 1)
    await store.redis.set(keys.ended("ann"), json.dumps({"reason": "idle"}), ex=60)
    refused = await store.claim("ann", "default", queue_grace=60, unless_ended=True)
    assert isinstance(refused, SessionEnded)
    assert await store.lookup("ann") is None and (await store.counts("default"))["ready"] == 1
    assert await store.pop_ended("ann") == {"reason": "idle"}  # the user was told: claim again
    claim = await store.claim("ann", "default", queue_grace=60, unless_ended=True)
    assert isinstance(claim, Claim) and claim.new


async def test_pod_states_come_from_the_state_sets(store: FleetStore) -> None:
    ids = await ready_pods(store, 3)
    claim = await store.claim("ann", "default", queue_grace=60)
    assert isinstance(claim, Claim)
    assert await store.add_pod("p-new", "default", 10)
    assert await store.end_pod(ids[2], "admin") is not None
    states = await store.pod_states(["default"])
    assert states == {
        claim.pod: ("default", PodState.CLAIMED),
        next(i for i in ids[:2] if i != claim.pod): ("default", PodState.READY),
        ids[2]: ("", PodState.DELETING),
        "p-new": ("default", PodState.WARMING),
    }
    assert await store.pod_states(["other"]) == {ids[2]: ("", PodState.DELETING)}


async def test_add_pod_respects_max(store: FleetStore) -> None:
    assert await store.add_pod("p1", "default", 2)
    assert await store.add_pod("p2", "default", 2)
    assert not await store.add_pod("p3", "default", 2)


async def test_activity_batch_touches_only_claimed_users(store: FleetStore) -> None:
    await ready_pods(store, 1)
    await store.claim("ann", "default", queue_grace=60)
    await store.touch({"ann": 9e9, "ghost": 9e9})
    assert await store.redis.zscore(keys.ACTIVITY, "ann") == 9e9
    assert await store.redis.zscore(keys.ACTIVITY, "ghost") is None
