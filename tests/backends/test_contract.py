"""One contract, every backend: the fleet behaves the same on local processes and on Kubernetes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet import Claim, Rebuilding, Waiting, keys
from tests.backends.harness import harness

BACKENDS = ["local", "kubernetes", "agones"]


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_warm_buffer_is_kept(kind: str, redis_url: str, tmp_path: Path) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        counts = await h.counts()
        assert counts["ready"] == 2 and counts["warming"] == 0


async def test_claim_is_instant_unique_and_refills(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        results = await asyncio.gather(*(h.claim(u) for u in ["ann", "bob", "ann", "bob", "ann"]))
        claims = [r for r in results if isinstance(r, Claim)]
        assert len(claims) == 5
        pods = {c.user: c.pod for c in claims}
        assert len({c.pod for c in claims if c.user == "ann"}) == 1
        assert pods["ann"] != pods["bob"]
        for claim in (pods["ann"], pods["bob"]):
            assert await h.store.redis.hget(keys.pod(claim), "user") in ("ann", "bob")
        who = await h.whoami(next(c for c in claims if c.user == "ann"))
        assert who["pod"] == pods["ann"]
        await h.until(lambda: h._at_least("ready", 2), what="buffer refilled after claims")
        assert (await h.counts())["claimed"] == 2


async def test_claim_is_written_on_the_pod_record(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        claim = await h.claim("ann@example.com")
        assert isinstance(claim, Claim)
        records = {r.id: r for r in await h.backend.observe()}
        assert records[claim.pod].user == "ann@example.com"
        if h.sim is not None:
            obj = (
                h.sim.gameserver("sd", claim.pod)
                if kind == "agones"
                else h.sim.pod("sd", claim.pod)
            )
            labels = obj["metadata"]["labels"]
            assert labels["sdbroker.io/state"] == "claimed"
            assert labels["sdbroker.io/user"].startswith("ann-example-com-")


async def test_single_use_reclaim_deletes_and_refills(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        first = await h.claim("ann")
        assert isinstance(first, Claim)
        assert await h.fleet.release("ann", "idle") is not None
        await h.until(lambda: _gone(h, first.pod), what="reclaimed pod deleted")
        await h.ready(1)
        second = await h.claim("bob")
        assert isinstance(second, Claim) and second.pod != first.pod
        again = await h.claim("ann")
        assert isinstance(again, Claim | Waiting)
        if isinstance(again, Claim):
            assert again.pod not in (first.pod, second.pod)


async def _gone(h, pod: str) -> bool:
    """Out of the index, and deleted or terminating on the platform (a grace period may run)."""
    records = {r.id: r for r in await h.backend.observe()}
    deleted = pod not in records or records[pod].terminating
    return deleted and not await h.store.redis.exists(keys.pod(pod))


async def test_failure_ends_the_claim(kind: str, redis_url: str, tmp_path: Path) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        if h.sim is not None:
            h.sim.evict("sd", claim.pod)
        else:
            import os
            import signal

            pid = int((await h.store.redis.hget(keys.pod(claim.pod), "pid")) or 0)
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        await h.until(lambda: _no_claim(h, "ann"), what="claim ended after pod failure")
        await h.ready(1)
        fresh = await h.claim("ann")
        assert isinstance(fresh, Claim) and fresh.pod != claim.pod


async def _no_claim(h, user: str) -> bool:
    return await h.store.lookup(user) is None


async def test_rebuild_after_flushall(kind: str, redis_url: str, tmp_path: Path) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        await h.store.redis.flushall()
        waiting = await h.claim("bob")
        assert isinstance(waiting, Rebuilding)  # fail closed, never a guess
        h.controller.wake()
        await h.until(lambda: h.store.lookup("ann"), what="claims rebuilt from the pods' records")
        assert (await h.store.lookup("ann")).pod == claim.pod
        await h.ready(1)
        bob = await h.claim("bob")
        assert isinstance(bob, Claim) and bob.pod != claim.pod
