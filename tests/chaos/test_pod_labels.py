"""The durable record on a pod is written once: a pod labelled for one user refuses another.

This is what keeps "one user per pod, ever" when Redis is flushed between the
Lua claim and the label (see redis_flushed_mid_claim in
test_claims_state_machine.py): the index is rebuilt without the claim, the pod
is offered again, and only the label can still say no.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleet import Conflict, FleetSpec, Phase, PodGone, PodRecord, parse_spec
from fleet.backends.local import LocalBackend
from tests.chaos.support import SLOW_UPSTREAM


def slow_spec(tmp_path: Path, pods: int = 1) -> FleetSpec:
    return parse_spec(
        f"""backend: local
outputs: {tmp_path / "out"}
profiles:
  - name: default
    max: {pods}
    probe: http:/ready
    local:
      command: [{sys.executable}, {SLOW_UPSTREAM}, --port, "{{port}}", --pod-id, "{{pod}}"]
      stop_grace: 1s
"""
    )


async def test_local_pod_claimed_for_one_user_refuses_another(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path)
    backend = LocalBackend(spec, tmp_path / "data")
    await backend.start()
    rec = await backend.create(spec.profiles[0], "default-pod1")
    try:
        await backend.mark_claimed(rec.id, "ann", "ann")
        await backend.mark_claimed(rec.id, "ann", "ann")  # the same user again is fine
        with pytest.raises(Conflict):
            await backend.mark_claimed(rec.id, "bob", "bob")
        assert (await backend.phase_of(rec.id)).user == "ann"
    finally:
        await backend.delete(rec.id)


async def test_two_brokers_racing_for_a_local_pod_claim_it_once(tmp_path: Path) -> None:
    """Brokers share the data dir: a pod's claim is written under a lock every process
    honours, never by a read-check-write two processes could interleave (both won)."""
    spec = slow_spec(tmp_path, pods=3)
    starter, other = LocalBackend(spec, tmp_path / "data"), LocalBackend(spec, tmp_path / "data")
    await starter.start()
    recs = [await starter.create(spec.profiles[0], f"default-pod{i}") for i in range(3)]
    try:
        for rec in recs:
            users = [f"user{i}" for i in range(8)]
            gate = threading.Barrier(len(users))

            def claim(user: str, rec: PodRecord = rec, gate: threading.Barrier = gate) -> str:
                gate.wait()
                try:
                    (starter if user[-1] in "0246" else other)._mark_claimed(rec.id, user)
                except Conflict:
                    return ""
                return user

            with ThreadPoolExecutor(len(users)) as pool:
                winners = [u for u in pool.map(claim, users) if u]
            assert len(winners) == 1, winners
            # Both brokers (and a rebuild from the records) see the one claim, with its time.
            for backend in (starter, other):
                seen = await backend.phase_of(rec.id)
                assert seen is not None and seen.user == winners[0] and seen.claimed_at > 0
            assert {r.id: r.user for r in await other.observe()}[rec.id] == winners[0]
    finally:
        for rec in recs:
            await starter.delete(rec.id)
    assert os.listdir(tmp_path / "data" / "pods") == []  # records and claims


async def test_a_claim_on_a_deleted_local_pod_fails_and_leaves_nothing(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path)
    backend = LocalBackend(spec, tmp_path / "data")
    await backend.start()
    rec = await backend.create(spec.profiles[0], "default-pod1")
    await backend.delete(rec.id)
    with pytest.raises(PodGone):
        await backend.mark_claimed(rec.id, "ann", "ann")
    assert os.listdir(tmp_path / "data" / "pods") == []


async def test_another_brokers_pod_is_seen_alive_until_it_dies(tmp_path: Path) -> None:
    """A pod this broker did not start (its pid checked once by psutil, then by its
    start time in /proc) turns GONE when its process ends, zombie or reaped."""
    spec = slow_spec(tmp_path)
    starter, other = LocalBackend(spec, tmp_path / "data"), LocalBackend(spec, tmp_path / "data")
    await starter.start()
    rec = await starter.create(spec.profiles[0], "default-pod1")
    try:
        for _ in range(2):  # the first look asks psutil, the second /proc
            assert [r.phase for r in await other.observe()] == [Phase.STARTING]
        os.killpg(int(rec.extra["pid"]), signal.SIGKILL)  # its parent (starter) has not reaped it
        deadline = time.monotonic() + 10
        while [r.phase for r in await other.observe()] != [Phase.GONE]:
            assert time.monotonic() < deadline, "the dead pod still looks alive"
            await asyncio.sleep(0.05)
    finally:
        await starter.delete(rec.id)
