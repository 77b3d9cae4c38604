"""The real fleet code on the Kubernetes simulator, on one scaled clock: used by bench/sim.py.

One process, one event loop: KubeSim (50 nodes x 1 GPU, pod start 60-120 s
simulated, no process runner: pods turn Ready after the delay), the
kubernetes backend, or the agones backend on the simulator's Agones
(sim_agones.py: GPU churn counted too), with the real kubernetes_asyncio
client and watch, FleetStore
on a real redis-server, Fleet for claims, Controller for scaling and the
reaper's ReapCycle for reclaim. Every clock parameter gets the same
ScaledClock; the controller's interval (real seconds) is the policy's
simulated interval divided by the scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from fleet import Claim, Controller, Fleet, FleetStore, connect_redis, make_backend
from fleet.aiotasks import raise_if_cancelled
from fleet.events import listen
from fleet.probes import Probe
from fleet.spec import parse_spec
from reaper.cycle import ReapCycle
from tests.kubeapi import KubeSim, ScaledClock

from . import sim_agones
from .harness import RedisServer, stop_process

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


@dataclass
class User:
    name: str
    arrive: float  # simulated seconds from the start
    active: float  # seconds of real use once the WebUI is there
    tab: float  # seconds the tab then stays open (polling), 0 = closed at once


@dataclass
class RealPolicy:
    name: str
    scale_every: float  # controller periodic interval, simulated seconds
    events: bool  # wake the controller on claim/release/queue/pod events
    reap_every: float  # simulated seconds
    tab_counts_as_activity: bool


@dataclass
class RealResult:
    waits: list[float] = field(default_factory=list)
    warm: int = 0
    unserved: list[float] = field(default_factory=list)  # waits so far of users never served
    ready_idle_s: float = 0.0  # GPU-seconds: Ready and unclaimed
    claimed_idle_s: float = 0.0  # GPU-seconds: claimed, user not actively using it
    claimed_active_s: float = 0.0
    warming_s: float = 0.0
    reclaimed: int = 0
    claim_calls: int = 0
    lag_max: float = 0.0  # simulated seconds the loop ran late (worst)
    lag_mean: float = 0.0
    stuck_tasks: int = 0  # tasks that ignored their cancel at the end (a library swallowed it)
    churn: sim_agones.Churn | None = None  # agones: GameServers made and never used
    wall: float = 0.0


def morning(users: int, span: float, rng: random.Random) -> list[User]:
    """Arrivals peaking ~1.5 h in (a 9:30 peak if the run starts at 8:00); varied sessions, idle tails."""
    out = []
    for i in range(users):
        t = (
            rng.gauss(0.3 * span, 0.18 * span)
            if rng.random() < 0.8
            else rng.uniform(0, 0.75 * span)
        )
        active = min(2 * 3600, rng.lognormvariate(6.9, 0.7))  # ~17 min median
        tab = rng.lognormvariate(7.8, 0.8) if rng.random() < 0.5 else 0.0  # ~40 min median tail
        out.append(User(f"user{i:03d}", max(0.0, min(0.8 * span, t)), active, tab))
    return sorted(out, key=lambda u: u.arrive)


class NotBusy(Probe):
    """No WebUI runs in the simulator: every busy probe answers 'not busy'."""

    def __init__(self) -> None:
        super().__init__("/ping")

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        return False


async def run_real(
    policy: RealPolicy, plan: list[User], *, gpus: int, buffer: int, span: float, scale: float,
    redis_url: str, tmp: Path, seed: int, backend_kind: str = "kubernetes",
) -> RealResult:  # fmt: skip
    res = RealResult()
    clock = ScaledClock(scale)
    started_wall = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
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
        backend = make_backend(spec, tmp / "data")
        await backend.start()
        stack.push_async_callback(backend.close)
        if agones:
            await sim_agones.install_fleet(backend, spec)
        fleet = Fleet(store, backend, spec, http, queue_grace=60, clock=clock.time)
        controller = Controller(
            store, backend, lambda: fleet.spec, http,
            interval=policy.scale_every / scale, clock=clock.time,
        )  # fmt: skip
        if not policy.events:
            backend.on_change = None  # published: no wake on pod changes either, only the timer
        cycle = ReapCycle(
            store, lambda: fleet.spec, http, backend=backend, clock=clock.time,
            sleep=clock.sleep, probe_for=lambda kind: NotBusy(),
        )  # fmt: skip

        t0 = clock.time()

        def now() -> float:
            return clock.time() - t0

        served: set[str] = set()
        claimed_at: dict[str, float] = {}  # users holding a pod -> when they got it (sim s from t0)
        by_name = {u.name: u for u in plan}
        tasks: list[asyncio.Task] = []

        def spawn(coro) -> None:  # noqa: ANN001
            tasks.append(asyncio.create_task(coro))

        spawn(controller.run())
        if policy.events:

            def wake(kind: str, args: list[str]) -> None:
                if kind in ("claim", "release", "queue", "scale", "spec"):
                    controller.wake()

            spawn(listen(redis, [wake]))

        async def user(u: User) -> None:
            await clock.sleep(u.arrive - now())
            first = True
            while True:
                raise_if_cancelled()
                res.claim_calls += 1
                result = await fleet.claim(u.name)
                if isinstance(result, Claim):
                    wait = now() - u.arrive
                    res.waits.append(wait)
                    res.warm += first
                    claimed_at[u.name] = now()
                    served.add(u.name)
                    await store.touch({u.name: clock.time()})
                    return
                first = False
                await clock.sleep(POLL)

        async def touches() -> None:
            while True:
                raise_if_cancelled()
                t = now()
                seen = {}
                for name, at in claimed_at.items():
                    u = by_name[name]
                    until = at + u.active + (u.tab if policy.tab_counts_as_activity else 0.0)
                    if t < until:
                        seen[name] = clock.time()
                await store.touch(seen)
                await clock.sleep(TOUCH_EVERY)

        async def reaper() -> None:
            while True:
                raise_if_cancelled()
                await clock.sleep(policy.reap_every)
                summary = await cycle.run()
                for entry in summary.ended:
                    claimed_at.pop(str(entry["user"]), None)
                res.reclaimed += len(summary.ended)
                if policy.events and summary.ended:
                    controller.wake()  # release events are published too; harmless duplicate

        async def sample() -> None:
            while True:
                raise_if_cancelled()
                counts = await store.counts("default")
                t = now()
                active = sum(1 for n, at in claimed_at.items() if t < at + by_name[n].active)
                res.ready_idle_s += counts["ready"] * SAMPLE_EVERY
                res.claimed_active_s += active * SAMPLE_EVERY
                res.claimed_idle_s += max(0, counts["claimed"] - active) * SAMPLE_EVERY
                res.warming_s += counts["warming"] * SAMPLE_EVERY
                await clock.sleep(SAMPLE_EVERY)

        lags: list[float] = []

        async def lag() -> None:
            while True:
                raise_if_cancelled()
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append((time.monotonic() - before - 0.01) * scale)

        for u in plan:
            spawn(user(u))
        for job in (touches(), reaper(), sample(), lag()):
            spawn(job)
        await clock.sleep(span)
        for t in tasks:
            t.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=30)  # bounded: never hang the report
        res.stuck_tasks = len(stuck)
        end = now()
        res.unserved = [end - u.arrive for u in plan if u.arrive < end and u.name not in served]
        res.wall = time.monotonic() - started_wall
        res.lag_max = max(lags, default=0.0)
        res.lag_mean = sum(lags) / max(1, len(lags))
    return res


def main_real(args, pct) -> None:  # noqa: ANN001
    plan = morning(args.users, args.span, random.Random(args.seed))
    policies = [
        RealPolicy("published (timer 30s, reaper 5m, HTTP silence)", 30, False, 300, True),
        RealPolicy("sdbroker (events + 2s timer, reaper 30s, activity)", 2, True, 30, False),
    ]
    if args.backend == "agones":  # the published policy is the kubernetes backend's question
        policies = policies[1:]
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="sdb-sim-") as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(tmp / "redis").start()
        try:
            results = []
            for i, policy in enumerate(policies):
                (tmp / str(i)).mkdir()
                r = asyncio.run(
                    run_real(
                        policy, plan, gpus=args.gpus, buffer=args.buffer, span=args.span,
                        scale=args.scale, redis_url=redis.url.rsplit("/", 1)[0] + f"/{i}",
                        tmp=tmp / str(i), seed=args.seed, backend_kind=args.backend,
                    )
                )  # fmt: skip
                results.append((policy, r))
        finally:
            stop_process(redis.proc)
    wall = sum(r.wall for _, r in results)
    print(
        f"method: REAL CODE - KubeSim ({args.gpus} nodes x 1 GPU, pod start 60-120 s sim, no processes) "
        f"+ {args.backend} backend + FleetStore on redis-server + Fleet.claim + Controller + ReapCycle, "
        f"one event loop, one ScaledClock x{args.scale:g}; {args.users} users arriving over a "
        f"{args.span / 3600:.1f} h simulated morning (peak ~{0.3 * args.span / 3600:.1f} h in), buffer "
        f"{args.buffer}, idle timeout 15m, claim polled every {POLL:g} s sim, seed {args.seed}; "
        f"wall {wall:.0f} s for both policies, run one after the other on the same arrivals"
    )
    head = (f"{'policy':<52} {'served':>7} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'warm':>6} "
            f"{'idle GPU-min':>13} {'(ready':>7} {'+claimed':>9}) {'reclaims':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for policy, r in results:
        w = r.waits
        idle = (r.ready_idle_s + r.claimed_idle_s) / 60
        print(
            f"{policy.name:<52} {len(w):>4}/{args.users:<3}"
            f"{pct(w, 0.5):>5.0f}s {pct(w, 0.9):>5.0f}s {pct(w, 0.99):>5.0f}s "
            f"{max(w, default=0):>5.0f}s {100 * r.warm / max(1, len(w)):>5.1f}% "
            f"{idle:>13.0f} {r.ready_idle_s / 60:>7.0f} {r.claimed_idle_s / 60:>9.0f}  {r.reclaimed:>8}"
        )
    for policy, r in results:
        print(
            f"  {policy.name}: longest wait {max(r.waits, default=0):.0f} s sim; "
            f"GPU-min warming {r.warming_s / 60:.0f}, claimed+active {r.claimed_active_s / 60:.0f}; "
            f"{len(r.unserved)} never served (waited up to {max(r.unserved, default=0):.0f} s by the end); "
            f"{r.claim_calls} claim calls; loop lag mean {r.lag_mean:.1f} s / max {r.lag_max:.0f} s sim; "
            f"wall {r.wall:.0f} s"
        )
    for policy, r in results:
        if r.churn is not None:
            print(f"  {policy.name}: {r.churn.line()}")
    print(
        "  time-to-WebUI = simulated seconds from arrival until Fleet.claim returned a Claim "
        "(percentiles over served users; users not served by the end of the span are left out "
        "and counted in 'served'); warm = Claim on the first call"
    )
    print(
        "  idle GPU-min = sum over time (sampled every 10 s sim) of pods Ready and unclaimed "
        "(FleetStore.counts ready) + pods claimed whose user is past their active use "
        "(claimed count minus users within their active window); warming pods not counted"
    )
