"""The index repaired from the pods' records, both ways (fleet/reconcile.py, issue 17 item 5).

Redis is put back in time for real: every key of an earlier moment is DUMPed and
RESTOREd over a flushed database, as a restore from a backup (or a failover to a
replica that was behind) leaves it. The pods' records (FakeBackend's) were not.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from redis.asyncio import Redis

from fleet import Claim, Controller, Fleet, FleetStore, PodState, connect_redis, keys
from fleet.reconcile import REBIND_AFTER
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC  # buffer 2, max 6


@dataclass
class Setup:
    redis: Redis
    store: FleetStore
    backend: FakeBackend
    fleet: Fleet
    controller: Controller


@pytest.fixture
async def warm(redis_url: str) -> AsyncIterator[Setup]:
    redis = connect_redis(redis_url)
    backend = FakeBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        controller = Controller(store, backend, lambda: SPEC, http)
        await controller.reconcile()  # index built, two pods created
        await controller.reconcile()  # and ready
        yield Setup(redis, store, backend, Fleet(store, backend, SPEC, http), controller)
    await redis.aclose()


async def backup(redis: Redis) -> dict[str, bytes]:
    return {key: await redis.dump(key) for key in await redis.keys(keys.PREFIX + "*")}


async def restore(redis: Redis, saved: dict[str, bytes]) -> None:
    await redis.flushdb()
    for key, value in saved.items():
        await redis.restore(key, 0, value, replace=True)


async def claim(s: Setup, user: str) -> Claim:
    got = await s.fleet.claim(user)
    assert isinstance(got, Claim), got
    return got


async def test_a_pass_gives_a_restored_index_back_its_claims(
    warm: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    saved = await backup(warm.redis)  # two Ready pods, no claim
    alices = (await claim(warm, "alice")).pod
    await warm.controller.reconcile()
    await restore(warm.redis, saved)
    assert alices in await warm.redis.zrange(keys.ready("default"), 0, -1)  # back in time

    with caplog.at_level(logging.ERROR, logger="fleet.reconcile"):
        await warm.controller.reconcile()
    assert "Redis lost writes" in caplog.text
    assert (await warm.store.lookup("alice")).pod == alices  # type: ignore[union-attr]
    assert alices not in await warm.redis.zrange(keys.ready("default"), 0, -1)
    bobs = (await claim(warm, "bob")).pod
    assert bobs != alices
    await warm.controller.reconcile()
    assert warm.backend.records[alices].user == "alice"  # never deleted
    reasons = [f["reason"] for _, f in await warm.redis.xrange(keys.AUDIT)]
    assert "reattached" in reasons and "index_restored" in reasons


async def test_a_claim_that_meets_the_owners_record_takes_another_pod(warm: Setup) -> None:
    saved = await backup(warm.redis)
    alices = (await claim(warm, "alice")).pod
    await restore(warm.redis, saved)  # no pass in between: bob's claim draws alice's pod
    bobs = (await claim(warm, "bob")).pod
    assert bobs != alices
    assert (await warm.store.lookup("alice")).pod == alices  # type: ignore[union-attr]
    await warm.controller.reconcile()
    assert warm.backend.records[alices].user == "alice"
    assert (await warm.store.pod(alices)).state is PodState.CLAIMED  # type: ignore[union-attr]


async def test_the_later_of_two_sessions_is_kept(warm: Setup) -> None:
    """Backup: alice on pod Q. Since then Q was reclaimed and deleted, and she works on P.
    The restored index names Q, whose record is gone; P's record names her: she keeps P."""
    old = (await claim(warm, "alice")).pod
    await warm.controller.reconcile()
    saved = await backup(warm.redis)
    await warm.fleet.release("alice", "idle")
    await warm.controller.reconcile()  # Q deleted
    assert old not in warm.backend.records
    current = (await claim(warm, "alice")).pod
    await warm.controller.reconcile()
    await restore(warm.redis, saved)

    await warm.controller.reconcile()
    await warm.controller.reconcile()
    assert current in warm.backend.records, "alice's live pod was deleted"
    assert (await warm.store.lookup("alice")).pod == current  # type: ignore[union-attr]


async def test_a_bound_claim_is_written_back_on_a_record_that_lost_it(warm: Setup) -> None:
    alices = (await claim(warm, "alice")).pod
    warm.backend.records[alices].user = ""  # the label was lost (an edit, a recreated record)
    await warm.redis.hset(keys.claim("alice"), "since", repr(warm.store.clock() - REBIND_AFTER))
    await warm.controller.reconcile()
    assert warm.backend.records[alices].user == "alice"
