"""The broker's runtime: every long-lived part of the fleet, built in one place.

`build` makes the parts from their collaborators (hooks such as the metrics
are passed in at construction; nothing is attached afterwards) and does no
I/O; `start` starts the backend and the background tasks; `stop` undoes it
in order, awaiting work in flight:

1. stop taking work: the controller, the event listener, the spec follower and
   the schedule timer are cancelled, and no periodic task starts a new run;
2. finish periodic tasks: a run in flight (an activity flush, a reaper cycle)
   completes, bounded by aiotasks.STOP_TIMEOUT;
3. flush activity: the last batch of what users did; this process's tabs are
   written as closed (broker/presence.py);
4. close backends (and end every pod first when this broker owns the fleet);
5. Redis is closed after this, by app.redis_ctx (the runtime never closes it).

All background work runs as `Tasks` (fleet/aiotasks.py: one way, with backoff
and jitter on failure, and health that /_broker/readyz shows). A new periodic
task (a loop-lag monitor, a heartbeat) is one `self.tasks.every(...)` line in
`_start_tasks`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from redis.asyncio import Redis

from fleet import (
    Autoscaler,
    Backend,
    Controller,
    Doorbell,
    Event,
    Fleet,
    FleetSpec,
    FleetStore,
    Handler,
    History,
    Kind,
    LogObserver,
    SpecFollower,
    Tasks,
    listen,
    make_backend,
    stop_fleet,
)
from reaper import ReapCycle, ReaperJob, count_reclaim

from . import logs, metrics
from .activity import ActivityRecorder
from .fleetops import FleetOps
from .presence import PresenceTracker
from .process_metrics import watch_loop_lag
from .proxy import PodPool
from .routing import Router
from .settings import Settings
from .waiting import WaitingRoom

log = logging.getLogger(__name__)
POD_KEEPALIVE = 60.0  # seconds an idle connection to a pod is kept for reuse


@dataclass(slots=True)
class Runtime:
    settings: Settings
    redis: Redis
    http: aiohttp.ClientSession
    pods: PodPool
    store: FleetStore
    backend: Backend
    fleet: Fleet
    autoscaler: Autoscaler
    history: History
    controller: Controller
    router: Router
    activity: ActivityRecorder
    presence: PresenceTracker
    reaper: ReaperJob
    room: WaitingRoom
    ops: FleetOps
    follower: SpecFollower
    respec: asyncio.Event
    owns_fleet: bool  # end every pod on stop: this broker is the fleet's only one
    tasks: Tasks = field(default_factory=Tasks)
    #: Every pub/sub event goes to each of these (auth adds its own at its start).
    handlers: list[Handler] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.backend.start()
        entries = sum(len(p.schedule) for p in self.fleet.spec.profiles)
        if entries:
            log.info("%d schedule entries armed (timezone %s)", entries, self.fleet.spec.timezone)
        self._start_tasks()
        await self.ops.sample()
        self._undo.append(logs.describe_sessions(lambda: self.fleet.spec))

    def _start_tasks(self) -> None:
        """Every background task of the broker (a loop-lag monitor or heartbeats go here)."""
        settings, tasks = self.settings, self.tasks
        tasks.start("controller", self.controller.run)
        tasks.start("events", lambda: listen(self.redis, self.handlers))
        tasks.start("spec-follower", self.follower.run)
        tasks.start(
            "schedule-timer",
            lambda: self.autoscaler.wake_at_changes(self.controller.wake, self.respec),
        )
        tasks.every("activity-flush", settings.activity_flush, self.activity.flush)
        tasks.every("presence-beat", settings.activity_flush, self.presence.beat)
        if settings.reap_interval > 0:  # 0: a CronJob (python -m reaper --once) reaps instead
            self.reaper.schedule(tasks)
        tasks.every("history-sample", settings.history_interval, self.ops.sample)
        tasks.start("loop-lag", watch_loop_lag)  # sdbroker_event_loop_lag_seconds
        if settings.fleet_reload:
            tasks.every("fleet-file", settings.fleet_reload, self.ops.reload_file)

    async def stop(self) -> None:
        """Stop in order (module docstring); Redis stays open for the caller to close."""
        try:
            await self.tasks.stop()
            await self.activity.flush()
            await self.presence.leave()
            await self.reaper.stop()
            await self.router.close()
            if self.owns_fleet:
                await stop_fleet(self.store, self.backend, self.fleet.spec)
            await self.backend.close()
        finally:
            self.pods.close()
            await self.http.close()
            for undo in self._undo:
                undo()


def build(settings: Settings, redis: Redis, spec: FleetSpec, *, owns_fleet: bool) -> Runtime:
    """Every part, from its collaborators; `spec` is the one to run (see app.adopt_spec)."""
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=POD_KEEPALIVE),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )
    store = FleetStore(redis, on_claim=metrics.count_claim)
    doorbell = Doorbell()  # the backend wakes the controller on each platform change
    backend = make_backend(
        spec, settings.data_dir, on_change=doorbell.wake, on_settings=metrics.settings_counted
    )
    fleet = Fleet(
        store, backend, spec, http, queue_grace=settings.queue_grace, on_claimed=metrics.claim_took
    )
    autoscaler = Autoscaler(redis, lambda: fleet.spec)
    history = History(redis)
    controller = Controller(
        store,
        backend,
        lambda: fleet.spec,
        http,
        interval=settings.controller_interval,
        sizes=autoscaler.effective,
        queue_grace=settings.queue_grace,
        on_ready=metrics.pod_started,
        on_reclaim=count_reclaim,
        on_start_failure=metrics.pod_start_failed,
        doorbell=doorbell,
    )
    router = Router(fleet, ttl=settings.route_cache_ttl)
    room = WaitingRoom(fleet, store, history, autoscaler)
    respec = asyncio.Event()
    ops = FleetOps(
        redis, fleet, store, history, controller, room,
        fleet_file=settings.fleet, history_interval=settings.history_interval, respec=respec,
    )  # fmt: skip
    follower = SpecFollower(redis, lambda: fleet.spec, ops.swap)
    reaper = ReaperJob(
        ReapCycle(
            store,
            lambda: fleet.spec,
            http,
            backend=backend,
            settle=settings.activity_flush,
            missed_probes=settings.reap_missed_probes,
        ),
        interval=settings.reap_interval,
    )

    def wake_controller(event: Event) -> None:
        if event.kind in (Kind.CLAIM, Kind.RELEASE, Kind.QUEUE):
            controller.scale_soon()  # counts changed: a light pass, gathered over a burst
        elif event.kind in (Kind.SCALE, Kind.SPEC):
            controller.wake()

    return Runtime(
        settings=settings,
        redis=redis,
        http=http,
        pods=PodPool(keepalive=POD_KEEPALIVE),
        store=store,
        backend=backend,
        fleet=fleet,
        autoscaler=autoscaler,
        history=history,
        controller=controller,
        router=router,
        activity=ActivityRecorder(store),
        presence=PresenceTracker(store, interval=settings.activity_flush),
        reaper=reaper,
        room=room,
        ops=ops,
        follower=follower,
        respec=respec,
        owns_fleet=owns_fleet,
        handlers=[
            router.on_event,
            fleet.on_event,  # a claim bound elsewhere: requests waiting for it go on
            wake_controller,
            room.on_event,
            follower.on_event,
            metrics.EventMetrics().on_event,
            LogObserver().on_event,
        ],  # fmt: skip
    )
