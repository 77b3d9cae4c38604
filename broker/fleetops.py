"""The broker's side of a fleet that changes while it runs (a cleanup context).

Started after the fleet context, it adds:
- hot reload: a `spec` event swaps in the applied spec (SpecFollower), then
  the schedule timers are replaced and the controller wakes;
- schedule timers: one APScheduler cron job per schedule entry wakes the
  controller at that moment (the sizes themselves come from fleet.autoscale);
- history: a sample of every profile's counts per SDB_HISTORY_INTERVAL
  (replicas share one series; the Lua call skips a sample taken already);
- the fleet file: when SDB_FLEET changes on disk (an edited file, a new
  ConfigMap), it is validated and applied like `sdbroker fleet apply`, once
  for all brokers (fleet.specstore); an invalid edit is refused and the
  running fleet kept;
- the waiting room's wake-ups and the metrics hooks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from fleet import REDIS_DOWN, FleetSpec, SpecError, SpecFollower, load_spec
from fleet.specstore import sha
from fleet.specstore import store as store_spec

from . import metrics
from .appkeys import (
    AUTOSCALER,
    CONTROLLER,
    EVENT_HANDLERS,
    FLEET,
    HISTORY,
    REDIS,
    SCHEDULER,
    SETTINGS,
    STORE,
    TASKS,
)
from .waiting import WAITING_ROOM, WaitingRoom

log = logging.getLogger(__name__)
HISTORY_JOB = "history-sample"
FILE_JOB = "fleet-file"


async def fleetops_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    fleet, store, controller = app[FLEET], app[STORE], app[CONTROLLER]
    autoscaler, history, scheduler = app[AUTOSCALER], app[HISTORY], app[SCHEDULER]

    room = app[WAITING_ROOM] = WaitingRoom(fleet, store, history, autoscaler)

    def swap(spec: FleetSpec) -> None:
        fleet.use_spec(spec)
        autoscaler.install(scheduler, spec, controller.wake)
        controller.wake()
        room.on_event("spec", [])

    follower = SpecFollower(app[REDIS], lambda: fleet.spec, swap)
    app[EVENT_HANDLERS].extend([room.on_event, follower.on_event])
    app[TASKS].start("spec-follower", follower.run)
    jobs = autoscaler.install(scheduler, fleet.spec, controller.wake)
    if jobs:
        log.info("%d schedule entries armed (timezone %s)", jobs, fleet.spec.timezone)

    seen_file = {"sha": sha(_read(settings.fleet))}

    async def reload_file() -> None:
        text = _read(settings.fleet)
        digest = sha(text)
        if not text or digest == seen_file["sha"]:
            return
        seen_file["sha"] = digest
        try:
            spec = load_spec(settings.fleet)
        except SpecError as exc:
            log.error(
                "%s changed but is invalid; keeping the running fleet:\n%s", settings.fleet, exc
            )
            return
        try:
            # Once for all brokers (a second store would drop overrides set since);
            # every broker's follower swaps it in.
            if await store_spec(app[REDIS], spec, source="file", once=True) is None:
                return
        except REDIS_DOWN as exc:
            seen_file["sha"] = ""  # try again next time
            log.warning("could not apply the changed %s: %s", settings.fleet, exc)
            return
        log.info("%s changed: applied (%d profiles)", settings.fleet, len(spec.profiles))

    if settings.fleet_reload:
        scheduler.add_job(
            reload_file,
            "interval",
            seconds=settings.fleet_reload,
            id=FILE_JOB,
            coalesce=True,
            max_instances=1,
        )

    async def sample() -> None:
        try:
            await history.sample(
                (p.name for p in fleet.spec.profiles), store.clock(), settings.history_interval
            )
        except REDIS_DOWN as exc:
            log.warning("history sample skipped: %s", exc)

    scheduler.add_job(
        sample,
        "interval",
        seconds=settings.history_interval,
        id=HISTORY_JOB,
        coalesce=True,
        max_instances=1,
    )
    await sample()
    store.on_claim = metrics.count_claim
    fleet.on_claimed = metrics.claim_took
    controller.on_ready = metrics.pod_started
    controller.on_start_failure = metrics.pod_start_failed
    try:
        yield
    finally:
        for job in (HISTORY_JOB,):
            if scheduler.get_job(job) is not None:
                scheduler.remove_job(job)


def _read(path: object) -> str:
    try:
        with open(path, encoding="utf-8") as f:  # type: ignore[call-overload]
            return f.read()
    except OSError:
        return ""
