"""The controller's two passes: a claim brings the light one, which reads no pod.

A full pass (`reconcile`) reads every pod; claims, releases and queue joins
only change counts, so they bring `rescale`. The light pass must still refill
the warm buffer, and must fall back to a full pass while the index is not built.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from redis.asyncio import Redis

from fleet import Claim, Controller, Fleet, FleetStore, PodRecord, connect_redis, keys, service
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC  # buffer 2, max 6


class CountingBackend(FakeBackend):
    """Counts full reads of the fleet."""

    observed = 0

    async def observe(self) -> list[PodRecord]:
        self.observed += 1
        return await super().observe()


@dataclass
class Warm:
    """A fleet with its two buffer pods ready, as two brokers would see it."""

    redis: Redis
    store: FleetStore
    backend: CountingBackend
    fleet: Fleet
    other: Fleet  # a second broker's, on the same Redis and platform
    controller: Controller


@pytest.fixture
async def warm(redis_url: str) -> AsyncIterator[Warm]:
    redis = connect_redis(redis_url)
    backend = CountingBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        controller = Controller(store, backend, lambda: SPEC, http)
        await controller.reconcile()  # index built, two pods created
        await controller.reconcile()  # and ready
        yield Warm(
            redis,
            store,
            backend,
            Fleet(store, backend, SPEC, http),
            Fleet(store, backend, SPEC, http),
            controller,
        )
    await redis.aclose()


async def test_claims_refill_the_buffer_without_reading_the_pods(warm: Warm) -> None:
    assert (await warm.store.counts("default"))["ready"] == 2
    for user in ("ann", "bob"):
        assert isinstance(await warm.fleet.claim(user), Claim)
    observed = warm.backend.observed
    await warm.controller.rescale()
    assert warm.backend.observed == observed  # not one pod read
    counts = await warm.store.counts("default")
    assert counts["claimed"] == 2 and counts["warming"] == 2  # the buffer is refilled
    await warm.controller.rescale()  # nothing more to do: no pod over the target
    assert len(warm.backend.created) == 4


async def test_light_pass_on_an_index_being_rebuilt_is_a_full_pass(warm: Warm) -> None:
    claim = await warm.fleet.claim("ann")
    assert isinstance(claim, Claim)
    await warm.redis.flushall()  # counts read now would be zero: scaling on them would overshoot
    await warm.controller.rescale()
    assert (await warm.store.lookup("ann")).pod == claim.pod  # type: ignore[union-attr]
    # Both pods adopted, one started to make the buffer 2 again; scaling on the
    # flushed counts would have started two more beside them.
    assert len(warm.backend.created) == 3
    assert (await warm.store.counts("default")) | {"warming": 0} == {
        "warming": 0, "ready": 1, "claimed": 1, "queue": 0
    }  # fmt: skip


async def test_a_claim_whose_claimer_died_mid_binding_is_bound_by_the_next_broker(
    warm: Warm, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = asyncio.Event()

    async def die_here() -> None:
        stuck.set()
        await asyncio.Event().wait()  # the claimer hangs, then is killed

    warm.backend.before_mark = die_here
    claimer = asyncio.create_task(warm.fleet.claim("ann"))
    await stuck.wait()
    claimer.cancel()
    assert await warm.redis.hget(keys.claim("ann"), "binding") == "1"

    monkeypatch.setattr(service, "BIND_WAIT", 0.3)
    claim = await warm.other.claim("ann")
    assert isinstance(claim, Claim) and not claim.binding
    assert await warm.redis.hget(keys.claim("ann"), "binding") is None  # bound now
    assert warm.backend.records[claim.pod].user == "ann"  # recorded on the pod by the second


async def test_a_full_pass_reads_only_the_pods_it_has_work_for(warm: Warm) -> None:
    """Offered and claimed pods that are alive need nothing: their state comes from the
    state sets, and only the others' hashes are read (reading all was most of a pass)."""
    read: list[str] = []
    pods_script = warm.store.scripts.pods

    async def counting(*, args: list[str]) -> str:
        read.extend(args)
        return await pods_script(args=args)

    warm.store.scripts = dataclasses.replace(warm.store.scripts, pods=counting)
    claim = await warm.fleet.claim("ann")
    assert isinstance(claim, Claim)
    await warm.controller.reconcile()  # one pod claimed, one pod started to refill the buffer
    assert read == []
    warm.backend.kill(claim.pod)
    await warm.controller.reconcile()  # reads the dead pod (and the one starting), ends it
    assert claim.pod in read and len(read) == 2
    assert await warm.store.lookup("ann") is None


class SlowBackend(FakeBackend):
    """A full read of the fleet that takes SECONDS (hundreds of pods being created)."""

    seconds = 0.0

    async def observe(self) -> list[PodRecord]:
        await asyncio.sleep(self.seconds)
        return await super().observe()


async def test_a_pass_longer_than_the_lock_keeps_the_lead(redis_url: str) -> None:
    """One controller leads at a time, even while a pass outlasts the lock's TTL."""
    redis = connect_redis(redis_url)
    backend = SlowBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        first, second = (
            Controller(store, backend, lambda: SPEC, http, leader_ttl=0.6) for _ in range(2)
        )
        backend.seconds = 2.0  # more than three TTLs
        leading = asyncio.create_task(first.run())
        following = None
        try:
            for _ in range(250):
                if first.leading:
                    break
                await asyncio.sleep(0.02)
            assert first.leading
            following = asyncio.create_task(second.run())
            both = 0
            for _ in range(100):  # 2 s: the whole of the first, slow pass
                await asyncio.sleep(0.02)
                both += first.leading and second.leading
            assert second.leading is False and both == 0
            assert first.leading is True
        finally:
            for task in (leading, following):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    await redis.aclose()
