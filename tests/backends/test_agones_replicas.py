"""One owner of an Agones Fleet's replicas: the broker, up and down.

With a FleetAutoscaler beside the broker, each raised `spec.replicas` for the
queue was set back to allocated + bufferSize at the next sync (agones v1.56.0
fleetautoscalers.go `applyBufferPolicy`, controller.go `syncFleetAutoscaler`),
and the Fleet deleted GameServers it had just started for the people waiting
(gameserversets `computeReconciliationAction`: not-yet-scheduled ones first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet import Claim, Waiting
from tests.backends.harness import Harness, harness
from tests.kubeapi import FLEETS, GAMESERVERS
from tests.kubeapi.store import Change

START = 3.0  # seconds a GameServer's pod takes to start (the measurement)


@dataclass
class FleetLog:
    replicas: list[int] = field(default_factory=list)  # spec.replicas, each value it took
    created: set[str] = field(default_factory=set)
    allocated: set[str] = field(default_factory=set)
    ended_unallocated: set[str] = field(default_factory=set)  # Shutdown or deleted, never used


def watch_fleet(h: Harness) -> FleetLog:
    assert h.sim is not None
    seen = FleetLog()

    def fleet(change: Change) -> None:
        value = int((change.obj.get("spec") or {}).get("replicas") or 0)
        if not seen.replicas or seen.replicas[-1] != value:
            seen.replicas.append(value)

    def gameserver(change: Change) -> None:
        name = change.obj["metadata"]["name"]
        state = (change.obj.get("status") or {}).get("state")
        if change.type == "ADDED":
            seen.created.add(name)
        if state == "Allocated":
            seen.allocated.add(name)
        ended = change.type == "DELETED" or state == "Shutdown"
        if ended and name not in seen.allocated:
            seen.ended_unallocated.add(name)

    h.sim.store.subscribe(FLEETS, fleet)
    h.sim.store.subscribe(GAMESERVERS, gameserver)
    return seen


async def serve(h: Harness, users: list[str], within: float) -> dict[str, float]:
    """Each user asks again every 0.1 s (their wait page) until served; seconds each waited."""
    started, served = time.monotonic(), {}
    while len(served) < len(users) and time.monotonic() - started < within:
        for user in users:
            if user not in served and isinstance(await h.claim(user), Claim):
                served[user] = time.monotonic() - started
        await asyncio.sleep(0.1)
    return served


async def test_agones_queue_is_served_without_the_fleet_size_oscillating(
    redis_url: str, tmp_path: Path
) -> None:
    """The issue's case: 3 s pod start, buffer 1, 1 claimed, 3 queued."""
    async with harness("agones", redis_url, tmp_path, buffer=1, max=6, start_delay=START) as h:
        seen = watch_fleet(h)
        await h.ready(1)
        assert isinstance(await h.claim("alice"), Claim)
        queued = ["bob", "carol", "dave"]
        for user in queued:
            assert isinstance(await h.claim(user), Waiting)
        served = await serve(h, queued, within=5 * START)
        await asyncio.sleep(1.0)  # a few more autoscaler syncs and controller passes
        report = (
            f"replicas {seen.replicas}; {len(seen.created)} GameServers created, "
            f"{len(seen.ended_unallocated)} ended unallocated; served {served}"
        )
        assert sorted(served) == sorted(queued), report
        assert seen.replicas == sorted(seen.replicas), report  # only ever raised here
        assert not seen.ended_unallocated, report
        assert len(seen.created) == 1 + 1 + len(queued), report  # alice's, the buffer, the queue's


async def test_agones_fleet_shrinks_when_claims_end(redis_url: str, tmp_path: Path) -> None:
    """The broker lowers the Fleet too; Agones picks unallocated GameServers to remove."""
    async with harness("agones", redis_url, tmp_path, buffer=1, max=4) as h:
        assert h.sim is not None
        claims = []
        for user in ("ann", "ben"):
            await h.ready(1)
            claims.append(await h.claim(user))
        assert all(isinstance(c, Claim) for c in claims), claims

        def replicas() -> int:
            return int(h.sim.fleet("sd", "webui")["spec"]["replicas"])  # type: ignore[index,union-attr]

        await h.until(lambda: replicas() == 3, what="2 claimed + 1 buffer")
        for claim in claims:
            await h.fleet.release(claim.user, "idle")  # type: ignore[union-attr]
        h.controller.scale_soon()
        await h.until(lambda: replicas() == 1, what="the Fleet lowered to the buffer")
        await h.until(
            lambda: len([g for g in h.sim.gameservers("sd") if not g["metadata"].get("deletionTimestamp")]) == 1,  # type: ignore[union-attr]
            what="one GameServer left",
        )  # fmt: skip


async def test_agones_a_fleetautoscaler_left_beside_the_broker_is_named(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness("agones", redis_url, tmp_path, buffer=1, max=4) as h:
        custom = h.backend.custom  # type: ignore[attr-defined]
        fas = {
            "apiVersion": "autoscaling.agones.dev/v1",
            "kind": "FleetAutoscaler",
            "metadata": {"name": "old-buffer"},
            "spec": {
                "fleetName": "webui",
                "policy": {"type": "Buffer", "buffer": {"bufferSize": 3, "maxReplicas": 4}},
            },
        }
        with caplog.at_level(logging.WARNING, logger="fleet.backends.agones"):
            await custom.create_namespaced_custom_object(
                "autoscaling.agones.dev", "v1", "sd", "fleetautoscalers", fas
            )
            await h.backend._check_autoscalers()  # type: ignore[attr-defined]
            await h.ready(1)
            assert isinstance(await h.claim("ann"), Claim)
            await h.until(
                lambda: "something else sizes it too" in caplog.text, what="the fight noticed"
            )
        assert "delete fleetautoscaler old-buffer" in caplog.text
