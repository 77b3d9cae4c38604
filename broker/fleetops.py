"""The broker's side of a fleet that changes while it runs (a cleanup context).

Started after the fleet context, it adds:
- hot reload: a `spec` event swaps in the applied spec (SpecFollower), then
  the schedule timers are replaced and the controller wakes;
- schedule timers: one APScheduler cron job per schedule entry wakes the
  controller at that moment (the sizes themselves come from fleet.autoscale);
- history: a sample of every profile's counts per SDB_HISTORY_INTERVAL
  (replicas share one series; the Lua call skips a sample taken already);
- the waiting room's wake-ups and the metrics hooks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from fleet import REDIS_DOWN, FleetSpec, SpecFollower

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
    try:
        yield
    finally:
        for job in (HISTORY_JOB,):
            if scheduler.get_job(job) is not None:
                scheduler.remove_job(job)
