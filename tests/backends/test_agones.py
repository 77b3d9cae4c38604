"""Agones-only behaviours: allocation is idempotent per user, lost answers are reconciled,
and a WebUI that puts its own GameServer back in the pool never gets another user."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from fleet import Claim, Conflict, Waiting, keys
from fleet.backends.agones import ALLOCATE_ATTEMPTS
from fleet.slug import slugify
from tests.backends.harness import Harness, harness
from tests.kubeapi import GAMESERVERS
from tests.kubeapi.store import Change

USER = "sdbroker.io/user"


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


async def test_unallocated_after_an_update_conflict_is_retried(
    redis_url: str, tmp_path: Path
) -> None:
    """Agones answers UnAllocated when its update of the GameServer it picked conflicts
    (another writer changed it since its cache read it: allocator.go), though that
    GameServer is still Ready: not a reason to put the user in line."""
    async with harness("agones", redis_url, tmp_path, buffer=1, max=1) as h:
        await h.ready(1)
        assert h.sim is not None
        h.sim.inject_allocation_conflict(1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim), claim
        assert labelled(h, "ann") == [claim.pod]
        assert await h.store.redis.zcard(keys.queue("default")) == 0


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


# --- a hostile WebUI: its pod shares localhost with the Agones SDK sidecar ---


def user_labels(h: Harness) -> dict[str, set[str]]:
    """Every sdbroker.io/user value each GameServer ever carried, from now on."""
    assert h.sim is not None
    seen: dict[str, set[str]] = {}

    def note(change: Change) -> None:
        meta = change.obj["metadata"]
        label = (meta.get("labels") or {}).get(USER)
        if label:
            seen.setdefault(meta["name"], set()).add(label)

    h.sim.store.subscribe(GAMESERVERS, note)
    return seen


def state_of(h: Harness, name: str) -> str:
    assert h.sim is not None
    return ((h.sim.gameserver("sd", name) or {}).get("status") or {}).get("state", "")


def deleted(h: Harness, name: str) -> bool:
    assert h.sim is not None
    gs = h.sim.gameserver("sd", name)
    return gs is None or bool(gs["metadata"].get("deletionTimestamp"))


async def claimed(h: Harness, user: str) -> Claim | None:
    result = await h.claim(user)
    return result if isinstance(result, Claim) else None


async def test_a_pod_that_calls_ready_on_itself_is_never_handed_on_and_is_deleted(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=1, max=2) as h:
        assert h.sim is not None
        seen = user_labels(h)
        await h.ready(1)
        alice = await h.claim("alice")
        assert isinstance(alice, Claim)
        await h.ready(1)  # the buffer refilled: bob's claim goes to Agones at once
        # Code in alice's WebUI calls SDK Ready() on its sidecar: Allocated -> Ready.
        h.sim.sdk_ready("sd", alice.pod)
        await h.sim.wait_for(lambda: state_of(h, alice.pod) == "Ready", interval=0.001)
        # bob asks at once (before the controller looks), then until he is served.
        first = await h.claim("bob")
        assert not isinstance(first, Claim) or first.pod != alice.pod
        assert seen[alice.pod] == {slugify("alice")}, "Agones allocated alice's pod to bob"
        await h.until(lambda: deleted(h, alice.pod), what="the GameServer deleted")
        bob = await h.until(lambda: claimed(h, "bob"), what="bob served")
        assert isinstance(bob, Claim) and bob.pod != alice.pod
        assert seen[alice.pod] == {slugify("alice")}
        mine = await h.store.lookup("alice")
        assert mine is None or mine.pod != alice.pod


async def test_a_rebuild_never_binds_a_claim_to_a_gameserver_that_left_allocated(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=1, max=1) as h:
        assert h.sim is not None
        seen = user_labels(h)
        await h.ready(1)
        alice = await h.claim("alice")
        assert isinstance(alice, Claim)
        h.sim.sdk_ready("sd", alice.pod)
        await h.sim.wait_for(lambda: state_of(h, alice.pod) == "Ready", interval=0.001)
        await h.store.redis.flushall()  # the index is rebuilt from the GameServers
        h.controller.wake()
        bob = await h.until(lambda: claimed(h, "bob"), what="bob served after the rebuild")
        assert isinstance(bob, Claim) and bob.pod != alice.pod
        await h.until(lambda: deleted(h, alice.pod), what="the GameServer deleted")
        assert seen[alice.pod] == {slugify("alice")}
        mine = await h.store.lookup("alice")
        assert mine is None or mine.pod != alice.pod


@pytest.mark.parametrize(
    "patch",
    [
        {"labels": {USER: slugify("bob")}, "annotations": {USER: "bob"}},  # another user's
        {"labels": {USER: slugify("bob")}},  # label and annotation disagree
    ],
    ids=["other-user", "label-vs-annotation"],
)
async def test_a_gameserver_whose_user_disagrees_with_the_index_is_deleted(
    redis_url: str, tmp_path: Path, patch: dict
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        alice = await h.claim("alice")
        assert isinstance(alice, Claim)
        await h.backend.custom.patch_namespaced_custom_object(  # type: ignore[attr-defined]
            "agones.dev", "v1", "sd", "gameservers", alice.pod, {"metadata": patch},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        await h.until(lambda: deleted(h, alice.pod), what="the GameServer deleted")
        mine = await h.store.lookup("alice")
        assert mine is None or mine.pod != alice.pod
        assert await h.store.lookup("bob") is None


async def test_only_an_allocation_writes_a_claim_on_a_gameserver(
    redis_url: str, tmp_path: Path
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        assert h.sim is not None
        ready = [g["metadata"]["name"] for g in h.sim.gameservers("sd")]
        with pytest.raises(Conflict):
            await h.backend.mark_claimed(ready[0], "ann", slugify("ann"))
        assert USER not in h.sim.gameserver("sd", ready[0])["metadata"]["labels"]
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        await h.backend.mark_claimed(claim.pod, "ann", slugify("ann"))  # its own: fine
        with pytest.raises(Conflict):
            await h.backend.mark_claimed(claim.pod, "bob", slugify("bob"))


def adoption_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fleet.controller" and "adopted" in r.message]


async def test_gameservers_the_fleet_makes_are_adopted_without_a_warning(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Agones, not the broker, creates each GameServer: the index adopts every one, which is
    routine. Before, each logged "index rebuilt from the backend: 1 pods adopted" at WARNING,
    an alarm per pod that hid the one that matters: the index lost while claims were held."""
    caplog.set_level(logging.INFO, logger="fleet.controller")
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        alice = await h.claim("alice")
        assert isinstance(alice, Claim)
        await h.ready(2)  # the buffer refilled: a third GameServer made and adopted
        routine = adoption_logs(caplog)
        assert len(routine) >= 2, [r.message for r in caplog.records]
        assert all(r.levelno < logging.WARNING for r in routine), [
            (r.levelname, r.message) for r in routine
        ]
        caplog.clear()
        await h.store.redis.flushall()  # the index lost while alice holds a GameServer
        h.controller.wake()
        await h.until(lambda: h.store.lookup("alice"), what="alice's claim restored")
        assert any(r.levelno == logging.WARNING for r in adoption_logs(caplog)), [
            (r.levelname, r.message) for r in caplog.records
        ]
