"""Autoscaling: schedules move min/buffer at their times (an injected clock drives a real
controller, real Redis, real stub pods), admin overrides last until the next schedule change,
and scale-down never touches a claimed pod."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from fleet import Autoscaler, Controller, Fleet, FleetStore, connect_redis, load_spec, make_backend
from tests.admin.support import Api, Person, eventually, fleet_file
from tests.support.clock import StepClock
from tests.support.procs import kill_pods

BERLIN = ZoneInfo("Europe/Berlin")
SCHEDULE = [
    {"cron": "0 9 * * mon-fri", "buffer": 2, "min": 1},
    {"cron": "0 19 * * *", "buffer": 0, "min": 0},
]


def berlin(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


Clock = StepClock


def scheduled_spec(tmp_path: Path):
    path = fleet_file(
        tmp_path / "fleet.yaml",
        tmp_path / "outputs",
        {"min": 0, "buffer": 0, "max": 4, "schedule": SCHEDULE},
        tz="Europe/Berlin",
    )
    return load_spec(path)


def test_the_latest_fired_entry_is_in_force(tmp_path: Path) -> None:
    spec = scheduled_spec(tmp_path)
    scaler = Autoscaler(None, lambda: spec)  # type: ignore[arg-type]  # no Redis: schedules only
    profile = spec.profiles[0]

    def sizes(when: str) -> tuple[int, int | str, int | None]:
        p, entry, _ = scaler.scheduled(profile, spec.timezone, berlin(when))
        return p.min, p.buffer, entry

    assert sizes("2025-01-06T08:59:59") == (0, 0, 1)  # Monday morning: Sunday 19:00 still holds
    assert sizes("2025-01-06T09:00:00") == (1, 2, 0)
    assert sizes("2025-01-06T18:59:00") == (1, 2, 0)
    assert sizes("2025-01-06T19:00:00") == (0, 0, 1)
    assert sizes("2025-01-11T10:00:00") == (0, 0, 1)  # Saturday: no 09:00 entry
    assert sizes("2025-03-31T09:30:00") == (1, 2, 0)  # after the switch to summer time
    at, entry = scaler.next_change(profile, spec.timezone, berlin("2025-01-10T19:30:00"))
    assert (at, entry) == (berlin("2025-01-11T19:00:00"), 1)  # Friday night -> Saturday 19:00


async def test_schedules_and_overrides_drive_a_real_controller(
    tmp_path: Path, redis_url: str
) -> None:
    spec = scheduled_spec(tmp_path)
    clock = Clock(berlin("2025-01-06T08:59:00"))
    redis = connect_redis(redis_url)
    store = FleetStore(redis, clock=clock)
    backend = make_backend(spec, tmp_path / "data")
    await backend.start()
    http = aiohttp.ClientSession()
    scaler = Autoscaler(redis, lambda: spec, clock=clock)
    controller = Controller(store, backend, lambda: spec, http, clock=clock, sizes=scaler.effective)
    fleet = Fleet(store, backend, spec, http, clock=clock)

    async def settle(**want: int) -> dict[str, int]:
        async def matches() -> dict[str, int] | None:
            await controller.reconcile()
            counts = await store.counts("default")
            return counts if all(counts[k] == v for k, v in want.items()) else None

        return await eventually(matches, 30, f"counts {want}")

    try:
        await settle(warming=0, ready=0, claimed=0)  # night sizes: scaled to zero
        clock.now = berlin("2025-01-06T09:00:00")
        await settle(ready=2, warming=0)  # min 1, buffer 2
        claim = await fleet.claim("alice")
        assert claim.pod  # type: ignore[union-attr]
        await settle(ready=2, claimed=1, warming=0)  # buffer on top of the claimed one

        # An admin's "for now": fewer warm pods; the oldest Ready one goes first.
        ready_before = await redis.zrange("sdb:ready:default", 0, -1)
        clock.now = berlin("2025-01-06T10:00:00")
        await scaler.set_override("default", buffer=1, by="test")
        await settle(ready=1, claimed=1, warming=0)
        assert await redis.zrange("sdb:ready:default", 0, -1) == ready_before[1:]

        # 19:00: the plan changes, the override ends with it; the claimed pod stays.
        clock.now = berlin("2025-01-06T19:00:00")
        await settle(ready=0, claimed=1, warming=0)
        assert (await store.lookup("alice")).pod == claim.pod  # type: ignore[union-attr]
        sizing = (await scaler.sizings())[0]
        assert sizing.override is None and sizing.entry == 1

        # The schedule timer wakes the controller at the next firing (Tuesday 09:00).
        clock.now = berlin("2025-01-07T09:00:00") - 0.2
        woken = asyncio.Event()
        timer = asyncio.create_task(scaler.wake_at_changes(woken.set, asyncio.Event()))
        try:
            await asyncio.wait_for(woken.wait(), 10)
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
    finally:
        for pod in await store.pods(["default"]):
            await backend.delete(pod.id)
        await backend.close()
        await http.close()
        await redis.aclose()
        kill_pods(tmp_path / "data")


@pytest.mark.parametrize("by", ["buffer", "max"])
async def test_scale_down_never_touches_a_claimed_pod(brokers, tmp_path: Path, by: str) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 4})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root, alice, bob = Person(broker.url), Person(broker.url), Person(broker.url)
    try:
        await root.login("root")
        token, _ = await root.admin_token()
        api = Api(root.http, broker.url, token)
        for person, name in ((alice, "alice"), (bob, "bob")):
            await person.login(name)
        pods = {
            name: (await eventually(p.whoami))["pod"]
            for name, p in (("alice", alice), ("bob", bob))
        }

        async def counts() -> dict[str, int]:
            profile = (await api.call("GET", "/fleet"))[1][0]
            return {k: profile[k] for k in ("warming", "ready", "claimed", "deleting")}

        await eventually(lambda: _is(counts, ready=2, claimed=2), what="2 claimed + 2 warm")
        change = {"buffer": 0} if by == "buffer" else {"max": 1, "buffer": 0}
        assert (await api.call("PUT", "/profiles/default/sizes", change))[0] == 200
        await eventually(lambda: _is(counts, ready=0, claimed=2, deleting=0), what="warm pods gone")
        await asyncio.sleep(1.5)  # a few more reconciles: still nothing claimed is touched
        assert await counts() == {"warming": 0, "ready": 0, "claimed": 2, "deleting": 0}
        assert (await alice.whoami())["pod"] == pods["alice"]  # type: ignore[index]
        assert (await bob.whoami())["pod"] == pods["bob"]  # type: ignore[index]
    finally:
        for person in (root, alice, bob):
            await person.close()


async def _is(counts, **want: int) -> bool:
    got = await counts()
    return all(got[k] == v for k, v in want.items())
