"""The real fleet code on the Kubernetes simulator, on one scaled clock: used by bench/sim.py.

One process, one event loop: KubeSim (50 nodes x 1 GPU, pod start 60-120 s
simulated, no process runner: pods turn Ready after the delay), the
kubernetes backend, or the agones backend on the simulator's Agones
(sim_agones.py: GPU churn counted too), with the real kubernetes_asyncio
client and watch, FleetStore
on a real redis-server, Fleet for claims, Controller for scaling and the
reaper's ReapCycle for reclaim, its busy probe answered from the plan (a
generation runs or not). A cross-check of bench/sim_des.py, whose figures
come first.

What makes a run valid (issue 19), checked and printed with the result:

- every clock constant scaled: the ScaledClock for everything that takes a
  clock; the controller's interval and its real-time constants (SCALE_GAP,
  WARMING_TICK, MIN_FULL_GAP in fleet/controller.py) divided by the scale
  for the run and put back after it;
- time integrated by the actual step: GPU-seconds add each sample's counts
  times the simulated time until the next sample, however late it came;
- loop lag: a 10 ms sleep's overshoot, in simulated seconds. The run is
  INVALID when its p99 exceeds 1% of the shortest interval the figures
  depend on (controller tick, claim poll, activity flush, reaper, queue grace,
  accounting step). Whatever the fleet code does in real time (a Redis round
  trip, a claim) is multiplied by the scale: the lag says how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from fleet import Claim, Controller, Doorbell, Fleet, FleetStore, connect_redis, make_backend
from fleet import controller as controller_module
from fleet.aiotasks import raise_if_cancelled
from fleet.events import Event, Kind
from fleet.listener import listen
from fleet.probes import Probe
from fleet.spec import parse_spec
from reaper.cycle import ReapCycle
from tests.kubeapi import KubeSim, ScaledClock

from . import sim_agones
from .harness import RedisServer, stop_process
from .sim_workload import Visit

SPEC = """\
backend: kubernetes
idle_timeout: 15m
profiles:
  - name: default
    min: 0
    buffer: {buffer}
    max: {gpus}
    probe: "http:/ping"
    kubernetes:
      namespace: sd
      image: example/sd-webui:test
      gpus: 1
      volumes: {{models: null, outputs: null}}
"""
POLL = 5.0  # a waiting browser asks again this often (simulated s)
TOUCH_EVERY = (
    15.0  # activity is flushed to Redis this often (simulated s), as the broker batches it
)
SAMPLE_EVERY = 10.0  # GPU accounting step (simulated s)
QUEUE_GRACE = 60.0  # SDB_QUEUE_GRACE's default (simulated s)
WAKE_KINDS = {Kind.CLAIM, Kind.RELEASE, Kind.QUEUE, Kind.SCALE, Kind.SPEC}


SCALED_CONSTANTS = (
    "SCALE_GAP",
    "WARMING_TICK",
    "MIN_FULL_GAP",
)  # fleet/controller.py, real seconds


@dataclass
class RealPolicy:
    name: str
    scale_every: float  # controller periodic interval, simulated seconds
    events: bool  # wake the controller on claim/release/queue/pod events
    reap_every: float  # simulated seconds


@dataclass
class RealResult:
    waits: list[float] = field(default_factory=list)
    warm: int = 0
    unserved: list[float] = field(default_factory=list)  # waits so far of users never served
    rewaits: list[float] = field(default_factory=list)  # returns that had to claim again
    kept: int = 0  # returns that found their pod
    ready_idle_s: float = 0.0  # GPU-seconds: Ready and unclaimed
    claimed_idle_s: float = 0.0  # GPU-seconds: claimed, user not actively using it
    claimed_active_s: float = 0.0
    warming_s: float = 0.0
    reclaimed: int = 0
    mid_generation: int = 0  # reclaims while the plan had a generation running
    claim_calls: int = 0
    claim_s: list[float] = field(default_factory=list)  # simulated seconds one Fleet.claim took
    lags: list[float] = field(default_factory=list)  # simulated seconds the loop ran late
    shortest: float = 0.0  # the shortest interval the figures depend on (simulated s)
    stuck_tasks: int = 0  # tasks that ignored their cancel at the end (a library swallowed it)
    churn: sim_agones.Churn | None = None  # agones: GameServers made and never used
    wall: float = 0.0

    @property
    def lag_p99(self) -> float:
        return _pct(self.lags, 0.99)

    @property
    def valid(self) -> bool:
        return self.lag_p99 <= 0.01 * self.shortest

    def rules(self) -> list[str]:
        """The validity checks of this run, one line each, as printed with its figures."""
        return [
            f"clock constants scaled: ScaledClock; controller interval and {', '.join(SCALED_CONSTANTS)} "
            "divided by the scale",
            "time integrated by the actual step between samples (not a fixed step)",
            f"loop lag p99 {self.lag_p99:.3f} s sim (max {max(self.lags, default=0):.2f}) vs 1% of the "
            f"shortest interval {self.shortest:g} s = {0.01 * self.shortest:.3f} s: "
            + ("VALID" if self.valid else "INVALID (figures shown, not to be used)"),
            f"one Fleet.claim took {statistics.fmean(self.claim_s or [0]):.2f} s sim on average "
            f"(max {max(self.claim_s, default=0):.1f}): real milliseconds times the scale",
        ]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


@contextlib.contextmanager
def scaled_controller(scale: float):
    """The controller's real-time constants divided by the scale for one run, then put back."""
    saved = {name: getattr(controller_module, name) for name in SCALED_CONSTANTS}
    try:
        for name, value in saved.items():
            setattr(controller_module, name, value / scale)
        yield
    finally:
        for name, value in saved.items():
            setattr(controller_module, name, value)


class PlanBusy(Probe):
    """No WebUI runs in the simulator: the busy probe answers from the plan, so the reaper
    sees each batch generation as it would through a WebUI's progress API."""

    def __init__(self, busy_at: dict[str, tuple[float, float]], now) -> None:
        super().__init__("/ping")
        self.busy_at, self.now = busy_at, now  # pod address -> (batch start, batch end)

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        start, end = self.busy_at.get(addr, (0.0, 0.0))
        return start <= self.now() < end


# Complex by design (C901): the real-code cross-check's one run, set up, driven and measured
# in order; its branches are the backends and policies it compares side by side.
async def run_real(  # noqa: C901
    policy: RealPolicy, plan: list[Visit], *, gpus: int, buffer: int, span: float, scale: float,
    redis_url: str, tmp: Path, seed: int, backend_kind: str = "kubernetes", tab_activity: bool = False,
) -> RealResult:  # fmt: skip
    res = RealResult(shortest=min(policy.scale_every, POLL, TOUCH_EVERY, policy.reap_every,
                                  QUEUE_GRACE, SAMPLE_EVERY))  # fmt: skip
    clock = ScaledClock(scale)
    started_wall = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(scaled_controller(scale))
        sim = await stack.enter_async_context(
            KubeSim(nodes=gpus, gpus_per_node=1, start_delay=(60, 120), clock=clock, seed=seed)
        )
        os.environ["KUBECONFIG"] = str(sim.write_kubeconfig(tmp / "kubeconfig", namespace="sd"))
        agones = backend_kind == "agones"
        if agones:
            res.churn = sim_agones.count_churn(sim)
        spec = parse_spec((sim_agones.SPEC if agones else SPEC).format(buffer=buffer, gpus=gpus))
        redis = connect_redis(redis_url)
        stack.push_async_callback(redis.aclose)
        await redis.flushdb()
        http = await stack.enter_async_context(aiohttp.ClientSession())
        store = FleetStore(redis, clock=clock.time)
        doorbell = Doorbell()
        # Published policy: no wake on pod changes either, only the timer.
        backend = make_backend(
            spec, tmp / "data", on_change=doorbell.wake if policy.events else None
        )
        await backend.start()
        stack.push_async_callback(backend.close)
        if agones:
            await sim_agones.install_fleet(backend, spec)
        fleet = Fleet(store, backend, spec, http, queue_grace=QUEUE_GRACE, clock=clock.time)
        controller = Controller(
            store, backend, lambda: fleet.spec, http, interval=policy.scale_every / scale,
            clock=clock.time, queue_grace=QUEUE_GRACE, doorbell=doorbell,
        )  # fmt: skip

        t0 = clock.time()

        def now() -> float:
            return clock.time() - t0

        busy_at: dict[str, tuple[float, float]] = {}  # pod address -> its batch (sim s from t0)
        cycle = ReapCycle(
            store, lambda: fleet.spec, http, backend=backend, clock=clock.time,
            sleep=clock.sleep, probe_for=lambda kind: PlanBusy(busy_at, now),
        )  # fmt: skip
        served: set[tuple[str, bool]] = set()
        holding: dict[str, tuple[Visit, float, str]] = {}  # person -> (visit, got it at, pod addr)
        tasks: list[asyncio.Task] = []

        def spawn(coro) -> None:
            tasks.append(asyncio.create_task(coro))

        spawn(controller.run())
        if policy.events:

            def wake(event: Event) -> None:
                if event.kind in WAKE_KINDS:
                    controller.wake()

            spawn(listen(redis, [wake]))

        async def person(v: Visit, at: float, back: bool) -> None:
            await clock.sleep(at - now())
            arrived, first = now(), True
            while True:
                raise_if_cancelled()
                res.claim_calls += 1
                before = now()
                result = await fleet.claim(v.person)
                res.claim_s.append(now() - before)
                if isinstance(result, Claim):
                    break
                first = False
                await clock.sleep(POLL)
            got = now()
            if back and not result.new:
                res.kept += 1
            elif back:
                res.rewaits.append(got - arrived)
            else:
                res.waits.append(got - arrived)
                res.warm += first
            served.add((v.person, back))
            holding[v.person] = (v, got, result.addr)
            busy_at[result.addr] = (got + v.active, got + v.use)
            await store.touch({v.person: clock.time()})
            if v.back is not None and v.back_after is not None:
                await person(v.back, got + v.active + v.tab + v.back_after, True)

        async def touches() -> None:
            while True:
                raise_if_cancelled()
                t = now()
                seen = {}
                for name, (v, got, _) in holding.items():
                    if t < got + v.active + (v.tab if tab_activity else 0.0):
                        seen[name] = clock.time()
                await store.touch(seen)
                await clock.sleep(TOUCH_EVERY)

        async def reaper() -> None:
            while True:
                raise_if_cancelled()
                await clock.sleep(policy.reap_every)
                t = now()
                summary = await cycle.run()
                for entry in summary.ended:
                    gone = holding.pop(str(entry["user"]), None)
                    if gone is not None:
                        start, end = busy_at.get(gone[2], (0.0, 0.0))
                        res.mid_generation += start <= t < end
                res.reclaimed += len(summary.ended)
                if policy.events and summary.ended:
                    controller.wake()  # release events are published too; harmless duplicate

        async def sample() -> None:
            """Each sample's counts hold until the next one: added for the time that actually passed."""
            prev_t, prev = now(), None
            while True:
                raise_if_cancelled()
                counts = await store.counts("default")
                t = now()
                in_use = sum(1 for v, got, _ in holding.values() if t < got + v.use)
                if prev is not None:
                    dt = t - prev_t
                    res.ready_idle_s += prev["ready"] * dt
                    res.claimed_active_s += prev["in_use"] * dt
                    res.claimed_idle_s += max(0, prev["claimed"] - prev["in_use"]) * dt
                    res.warming_s += prev["warming"] * dt
                prev_t, prev = t, {**counts, "in_use": in_use}
                await clock.sleep(SAMPLE_EVERY)

        async def lag() -> None:
            while True:
                raise_if_cancelled()
                before = time.monotonic()
                await asyncio.sleep(0.01)
                res.lags.append((time.monotonic() - before - 0.01) * scale)

        for v in plan:
            spawn(person(v, v.arrive, False))
        for job in (touches(), reaper(), sample(), lag()):
            spawn(job)
        await clock.sleep(span)
        for t in tasks:
            t.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=30)  # bounded: never hang the report
        res.stuck_tasks = len(stuck)
        end = now()
        res.unserved = [
            end - v.arrive for v in plan if v.arrive < end and (v.person, False) not in served
        ]
        res.wall = time.monotonic() - started_wall
    return res


def run_all(
    policies: list[RealPolicy], plan: list[Visit], *, gpus: int, buffer: int, span: float,
    scale: float, seed: int, backend: str = "kubernetes", tab_activity: bool = False,
) -> list[tuple[RealPolicy, RealResult]]:  # fmt: skip
    """Each policy on its own Redis database of one redis-server, one after the other."""
    logging.basicConfig(level=logging.ERROR)
    results = []
    with tempfile.TemporaryDirectory(prefix="sdb-sim-") as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(tmp / "redis").start()
        try:
            for i, policy in enumerate(policies):
                (tmp / str(i)).mkdir()
                r = asyncio.run(
                    run_real(
                        policy, plan, gpus=gpus, buffer=buffer, span=span, scale=scale,
                        redis_url=redis.url.rsplit("/", 1)[0] + f"/{i}", tmp=tmp / str(i),
                        seed=seed, backend_kind=backend, tab_activity=tab_activity,
                    )
                )  # fmt: skip
                results.append((policy, r))
        finally:
            stop_process(redis.proc)
    return results


SDBROKER_REAL = RealPolicy("sdbroker REAL CODE (events + 2s timer, reaper 30s)", 2, True, 30)
