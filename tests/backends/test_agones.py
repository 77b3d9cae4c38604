"""Agones-only behaviours: allocation is idempotent per user, and lost answers are reconciled."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet import Claim, Waiting
from fleet.backends.agones import ALLOCATE_ATTEMPTS
from fleet.slug import slugify
from tests.backends.harness import Harness, harness


def labelled(h: Harness, user: str) -> list[str]:
    assert h.sim is not None
    return [
        g["metadata"]["name"]
        for g in h.sim.gameservers("sd", f"sdbroker.io/user={slugify(user)}")
        if not g["metadata"].get("deletionTimestamp")
    ]


async def test_retried_allocation_returns_the_same_gameserver(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        profile = h.spec.profiles[0]
        first = await h.backend.allocate(profile, "ann", slugify("ann"))
        again = await h.backend.allocate(profile, "ann", slugify("ann"))
        assert first is not None and again is not None and first.id == again.id
        assert first.user == "ann" and labelled(h, "ann") == [first.id]


async def test_concurrent_first_requests_allocate_one_gameserver(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        results = await asyncio.gather(*(h.claim("ann") for _ in range(6)))
        pods = {r.pod for r in results if isinstance(r, Claim)}
        assert len(pods) == 1 and labelled(h, "ann") == list(pods)
        who = await h.whoami(next(r for r in results if isinstance(r, Claim)))
        assert who["pod"] in pods


async def test_nothing_ready_means_waiting(redis_url: str, tmp_path: Path) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=1, max=1) as h:
        await h.ready(1)
        assert isinstance(await h.claim("ann"), Claim)
        bob = await h.claim("bob")
        assert isinstance(bob, Waiting) and bob.position == 1
        # The Ready set may lag Agones: an UnAllocated answer also puts the user in line.
        await h.store.redis.zadd("sdb:ready:default", {"ghost": 0})
        carol = await h.claim("carol")
        assert isinstance(carol, Waiting) and carol.position >= 1


async def test_contention_is_retried(redis_url: str, tmp_path: Path) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        assert h.sim is not None
        h.sim.inject_allocation_contention(ALLOCATE_ATTEMPTS - 1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim) and labelled(h, "ann") == [claim.pod]


async def test_lost_allocation_answer_is_retried_to_the_same_gameserver(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        assert h.sim is not None
        h.sim.drop_allocation_responses(1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim) and labelled(h, "ann") == [claim.pod]


async def test_lost_allocation_is_reconciled_by_the_controller(
    redis_url: str, tmp_path: Path
) -> None:
    """agones#607: every answer lost; the GameServer is Allocated but Redis knows nothing."""
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        assert h.sim is not None
        h.sim.drop_allocation_responses(ALLOCATE_ATTEMPTS)
        first = await h.claim("ann")
        assert isinstance(first, Waiting)
        await h.until(lambda: h.store.lookup("ann"), what="lost allocation adopted")
        claim = await h.claim("ann")
        assert isinstance(claim, Claim) and labelled(h, "ann") == [claim.pod]


async def test_orphan_allocation_of_a_user_with_a_pod_is_deleted(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        assert h.sim is not None
        # A second GameServer allocated for ann behind the broker's back (another broker
        # version, a manual allocation): ann keeps hers, the orphan goes.
        other = next(
            g["metadata"]["name"]
            for g in h.sim.gameservers("sd")
            if g["status"]["state"] == "Ready"
        )
        await h.backend.custom.patch_namespaced_custom_object(  # type: ignore[attr-defined]
            "agones.dev", "v1", "sd", "gameservers", other,
            {"metadata": {"labels": {"sdbroker.io/user": slugify("ann")},
                          "annotations": {"sdbroker.io/user": "ann"}},
             "status": {"state": "Allocated"}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        await h.until(lambda: labelled(h, "ann") == [claim.pod], what="orphan deleted")
        assert (await h.store.lookup("ann")).pod == claim.pod
