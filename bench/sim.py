"""A simulated day of a 50-GPU fleet and 500 users: the published policy against ours.

Prints, never asserts. Headline: the REAL fleet code (kubernetes backend on
the KubeSim test API server, FleetStore on redis-server, Fleet, Controller,
ReapCycle) on one scaled clock, see bench/sim_real.py. Secondary table: a discrete-time
model (1 s steps) of the fleet's pods, queue and users, run twice on the SAME
seeded arrivals, once per policy. It does not drive the kubernetes backend
on the simulator (that is left to do); the pod lifecycle it models is the
simulator's: start 60-120 s, one pod per GPU, single-use pods.

    .venv/bin/python -m bench.sim [--users 500 --gpus 50 --seed 1 --span 18000 --scale 200 --no-model]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

DAY = 24 * 3600
IDLE_TIMEOUT = 15 * 60
BUFFER = 5


@dataclass
class Visit:
    user: int
    arrive: float
    active: float  # seconds of real use
    tab_open: float  # seconds the tab stays open (polling) after real use ends


@dataclass
class Pod:
    ready_at: float
    user: int | None = None
    visit: Visit | None = None
    claimed_at: float = 0.0


@dataclass
class Policy:
    name: str
    scale_every: float  # 0 = on every event
    reap_every: float
    tab_counts_as_activity: bool  # HTTP silence (published) vs real activity (ours)


@dataclass
class Result:
    waits: list[float] = field(default_factory=list)
    warm: int = 0
    idle_gpu_seconds: float = 0.0
    busy_gpu_seconds: float = 0.0


def visits(users: int, rng: random.Random) -> list[Visit]:
    out = []
    for user in range(users):
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2])):
            r = rng.random()
            if r < 0.5:
                t = rng.gauss(9.5 * 3600, 5400)  # the morning peak
            elif r < 0.85:
                t = rng.gauss(14 * 3600, 7200)
            else:
                t = rng.uniform(6 * 3600, 22 * 3600)
            active = min(4 * 3600, rng.lognormvariate(7.2, 0.7))  # ~22 min median
            tab = rng.lognormvariate(8.3, 0.8) if rng.random() < 0.4 else 0.0  # idle tails
            out.append(Visit(user, max(0.0, min(DAY - 3600, t)), active, tab))
    return sorted(out, key=lambda v: v.arrive)


def run(policy: Policy, plan: list[Visit], gpus: int, seed: int) -> Result:
    rng = random.Random(seed)
    res = Result()
    pods: list[Pod] = []
    queue: list[tuple[Visit, float]] = []
    arrivals = list(plan)
    next_scale = next_reap = 0.0

    def last_activity(pod: Pod) -> float:
        v = pod.visit
        assert v is not None
        end = max(v.arrive, pod.claimed_at) + v.active
        return end + (v.tab_open if policy.tab_counts_as_activity else 0.0)

    def scale(now: float) -> None:
        claimed = sum(p.user is not None for p in pods)
        target = min(gpus, claimed + len(queue) + BUFFER)
        for _ in range(target - len(pods)):
            pods.append(Pod(ready_at=now + rng.uniform(60, 120)))

    for step in range(DAY):
        now = float(step)
        event = False
        while arrivals and arrivals[0].arrive <= now:
            queue.append((arrivals.pop(0), now))
            event = True
        free = [p for p in pods if p.user is None and p.ready_at <= now]
        while queue and free:
            visit, since = queue.pop(0)
            pod = free.pop(0)
            pod.user, pod.visit, pod.claimed_at = visit.user, visit, now
            wait = now - since
            res.waits.append(wait)
            res.warm += wait == 0
            event = True
        if now >= next_reap:
            next_reap = now + policy.reap_every
            kept = [p for p in pods if p.user is None or now - last_activity(p) < IDLE_TIMEOUT]
            event |= len(kept) != len(pods)
            pods = kept
        if (policy.scale_every == 0 and event) or (policy.scale_every and now >= next_scale):
            next_scale = now + policy.scale_every
            scale(now)
        for p in pods:
            using = p.visit is not None and now < p.claimed_at + p.visit.active
            if using:
                res.busy_gpu_seconds += 1
            else:
                res.idle_gpu_seconds += 1
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--gpus", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--buffer", type=int, default=BUFFER)
    ap.add_argument(
        "--span", type=float, default=4 * 3600, help="simulated seconds (real-code run)"
    )
    ap.add_argument("--scale", type=float, default=200, help="ScaledClock factor (real-code run)")
    ap.add_argument("--no-model", action="store_true", help="skip the discrete-time model table")
    ap.add_argument(
        "--backend",
        choices=["kubernetes", "agones"],
        default="kubernetes",
        help="backend of the real-code run (agones: sdbroker's policy only, with GPU churn)",
    )
    args = ap.parse_args()
    from .sim_real import main_real

    main_real(args, pct)
    if args.no_model:
        return
    print()
    print("SECONDARY: the discrete-time MODEL (not the real code), a whole simulated day:")
    plan = visits(args.users, random.Random(args.seed))
    policies = [
        Policy("published (Buffer/30s, reaper 5m, HTTP silence)", 30, 300, True),
        Policy("sdbroker (event-driven, reaper 30s, activity)", 0, 30, False),
    ]
    print(f"method: discrete-time model, 1 s steps, {args.users} users, {len(plan)} visits, "
          f"{args.gpus} GPUs, pod start 60-120 s, buffer {BUFFER}, idle timeout 15m, seed {args.seed}")  # fmt: skip
    print("        (same arrivals for both policies; NOT the kubernetes backend on the simulator)")
    head = f"{'policy':<50} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'warm':>6} {'idle GPU-min':>13}"
    print(head)
    print("-" * len(head))
    for policy in policies:
        r = run(policy, plan, args.gpus, args.seed)
        w = r.waits
        print(
            f"{policy.name:<50} {pct(w, 0.5):>5.0f}s {pct(w, 0.9):>5.0f}s {pct(w, 0.99):>5.0f}s "
            f"{max(w, default=0):>5.0f}s {100 * r.warm / max(1, len(w)):>5.1f}% "
            f"{r.idle_gpu_seconds / 60:>13.0f}"
        )
    print("time-to-WebUI = wait from login to a pod; warm = served from the warm buffer at once")


if __name__ == "__main__":
    main()
