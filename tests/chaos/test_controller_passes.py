"""The controller's two passes: a claim brings the light one, which reads no pod.

A full pass (`reconcile`) reads every pod; claims, releases and queue joins
only change counts, so they bring `rescale`. The light pass must still refill
the warm buffer, and must fall back to a full pass while the index is not built.
"""

from __future__ import annotations

import asyncio

import aiohttp

from fleet import Claim, Controller, Fleet, FleetStore, PodRecord, connect_redis
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC  # buffer 2, max 6


class CountingBackend(FakeBackend):
    """Counts full reads of the fleet."""

    observed = 0

    async def observe(self) -> list[PodRecord]:
        self.observed += 1
        return await super().observe()


async def test_claims_refill_the_buffer_without_reading_the_pods(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    backend = CountingBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        fleet = Fleet(store, backend, SPEC, http)
        controller = Controller(store, backend, lambda: SPEC, http)
        await controller.reconcile()  # index built, two pods created
        await controller.reconcile()  # and ready
        assert (await store.counts("default"))["ready"] == 2
        for user in ("ann", "bob"):
            assert isinstance(await fleet.claim(user), Claim)
        observed = backend.observed
        await controller.rescale()
        assert backend.observed == observed  # not one pod read
        counts = await store.counts("default")
        assert counts["claimed"] == 2 and counts["warming"] == 2  # the buffer is refilled
        await controller.rescale()  # nothing more to do: no pod over the target
        assert len(backend.created) == 4
    await redis.aclose()


async def test_light_pass_on_an_index_being_rebuilt_is_a_full_pass(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    backend = CountingBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        fleet = Fleet(store, backend, SPEC, http)
        controller = Controller(store, backend, lambda: SPEC, http)
        await controller.reconcile()
        await controller.reconcile()
        claim = await fleet.claim("ann")
        assert isinstance(claim, Claim)
        await redis.flushall()  # counts read now would be zero: scaling on them would overshoot
        await controller.rescale()
        assert (await store.lookup("ann")).pod == claim.pod  # type: ignore[union-attr]
        # Both pods adopted, one started to make the buffer 2 again; scaling on the
        # flushed counts would have started two more beside them.
        assert len(backend.created) == 3
        assert (await store.counts("default")) | {"warming": 0} == {
            "warming": 0, "ready": 1, "claimed": 1, "queue": 0
        }  # fmt: skip
    await redis.aclose()


async def test_a_claim_whose_claimer_died_mid_binding_is_bound_by_the_next_broker(
    redis_url: str, monkeypatch
) -> None:
    from fleet import keys, service

    redis = connect_redis(redis_url)
    backend = CountingBackend(SPEC)
    store = FleetStore(redis)
    async with aiohttp.ClientSession() as http:
        first, second = Fleet(store, backend, SPEC, http), Fleet(store, backend, SPEC, http)
        controller = Controller(store, backend, lambda: SPEC, http)
        await controller.reconcile()
        await controller.reconcile()
        stuck = asyncio.Event()

        async def die_here() -> None:
            stuck.set()
            await asyncio.Event().wait()  # the claimer hangs, then is killed

        backend.before_mark = die_here
        claimer = asyncio.create_task(first.claim("ann"))
        await stuck.wait()
        claimer.cancel()
        assert await redis.hget(keys.claim("ann"), "binding") == "1"

        monkeypatch.setattr(service, "BIND_WAIT", 0.3)
        claim = await second.claim("ann")
        assert isinstance(claim, Claim) and not claim.binding
        assert await redis.hget(keys.claim("ann"), "binding") is None  # bound now
        assert backend.records[claim.pod].user == "ann"  # recorded on the pod by the second
    await redis.aclose()
