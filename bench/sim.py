"""GPU economy of a simulated day: the oracle, the published policy (faithful) and sdbroker.

Prints, never asserts. Primary figures: a clock-free discrete-event model
(bench/sim_des.py) of each policy on the same seeded workloads
(bench/sim_workload.py): the day, the day with open tabs counted as activity
for every policy (a sensitivity run: no evidence that an idle Gradio 3 tab
sends anything), a login spike and an all-day-tab day. Cross-check: the REAL
fleet code on the Kubernetes simulator on one scaled clock (bench/sim_real.py)
beside the model of the same policy on the same plan; it prints the rules of
a valid run and whether it kept them.

    .venv/bin/python -m bench.sim [--users 500 --gpus 50 --span 43200 --seed 1 --no-real]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from .sim_des import ORACLE, PRESENCE, PRESENCE_HALF, PUBLISHED, SDBROKER, Model, Policy, Result
from .sim_workload import Workload, morning, workloads

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def provenance() -> str:
    """Which commit the figures come from, and whether the simulation's files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench", "fleet", "reaper"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "generated outside a git checkout"
    if dirty:
        return f"generated from the work tree after commit {head} (bench/, fleet/ or reaper/ changed since)"
    return f"generated at commit {head}"


HEAD = (f"{'policy':<52} {'served':>8} {'mean':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'warm':>6} "
        f"{'back: kept':>10} {'re-claim p50/p90':>16} {'mid-gen':>7} {'pods':>5} "
        f"{'warming':>7} {'buffer':>7} {'cl-idle':>7} {'in use':>7} {'IDLE':>7}")  # fmt: skip


def row(name: str, r: Result, people: int) -> str:
    w = r.waits
    back = len(r.rewaits) + r.kept
    return (
        f"{name:<52} {len(w):>4}/{people:<4}{sum(w) / max(1, len(w)):>5.0f}s {pct(w, 0.5):>5.0f}s {pct(w, 0.9):>5.0f}s "
        f"{pct(w, 0.99):>5.0f}s {max(w, default=0):>5.0f}s {100 * r.warm / max(1, len(w)):>5.1f}% "
        f"{r.kept:>5}/{back:<4} {f'{pct(r.rewaits, 0.5):.0f}/{pct(r.rewaits, 0.9):.0f}s':>16} "
        f"{r.mid_generation:>7} {r.created if r.created >= 0 else '-':>5} {r.warming_s / 60:>7.0f} {r.warm_s / 60:>7.0f} "
        f"{r.claimed_idle_s / 60:>7.0f} {r.in_use_s / 60:>7.0f} {r.idle_s / 60:>7.0f}"
    )


LEGEND = """\
  served = first visits with a WebUI by the end / people; p50..max = seconds from arrival to a WebUI
  (first visits; the published policy's count the reloads of "Too many users"); warm = at once.
  back = returns (30% come back after a break) that found their pod kept / all returns; re-claim =
  seconds the others waited for a new pod. mid-gen = reclaims while a generation ran (must be 0).
  pods = pods started (single-use: every session needs one; more is churn).
  GPU-minutes, exact by interval: warming (started, not answering), buffer (Ready, unclaimed),
  cl-idle (claimed, nobody using it), in use (interaction or a generation); IDLE = buffer + cl-idle."""


def des_tables(args: argparse.Namespace) -> None:
    gone = f"{args.presence / 60:g}m"
    policies = [ORACLE, replace(PUBLISHED, reload=args.reload), SDBROKER,
                replace(PRESENCE, presence=args.presence,
                        name=f"sdbroker + reclaim_when_gone {gone}, every tab seen"),
                replace(PRESENCE_HALF, presence=args.presence,
                        name=f"sdbroker + reclaim_when_gone {gone}, half the tabs seen")]  # fmt: skip
    works = workloads(args.users, args.gpus, args.span, args.seed)
    runs: list[tuple[Workload, bool, str]] = [
        (works[0], False, "MAIN"),
        (works[0], True, "SENSITIVITY: an open tab counts as activity, for every policy"),
        (works[1], False, "LOGIN SPIKE"),
        (works[2], False, "ALL-DAY TAB"),
    ]
    started = time.monotonic()
    for work, tab, title in runs:
        print(f"\n{title} - {work.name}: {work.what}; buffer {args.buffer}, idle timeout 15m, pod start "
              f"60-120 s, seed {args.seed}")  # fmt: skip
        print(HEAD)
        print("-" * len(HEAD))
        for policy in policies:
            r = Model(policy, work, buffer=args.buffer, seed=args.seed, tab_activity=tab).run()
            print(row(policy.name, r, len(work.visits)))
    print(LEGEND)
    print(f"  (model wall {time.monotonic() - started:.1f} s)")


def cross_check(args: argparse.Namespace) -> None:
    from .sim_real import SDBROKER_REAL, run_all

    plan = morning(args.real_users, args.real_span, args.seed)
    work = Workload("cross-check", "", plan, args.real_gpus, args.real_span)
    model = Model(SDBROKER, work, buffer=args.buffer, seed=args.seed, tab_activity=False).run()
    print(f"\nCROSS-CHECK - the same policy, model and REAL CODE, on one plan: {args.real_users} people over "
          f"{args.real_span / 3600:.3g} h, {args.real_gpus} GPUs, buffer {args.buffer}, seed {args.seed}")  # fmt: skip
    print(f"  real code: KubeSim ({args.real_gpus} nodes x 1 GPU, pod start 60-120 s sim) + {args.backend} "
          f"backend + FleetStore on redis-server + Fleet.claim (polled every 5 s sim) + Controller + "
          f"ReapCycle (busy probe answered from the plan), one event loop, ScaledClock x{args.scale:g}")  # fmt: skip
    [(policy, real)] = run_all([SDBROKER_REAL], plan, gpus=args.real_gpus, buffer=args.buffer,
                               span=args.real_span, scale=args.scale, seed=args.seed, backend=args.backend)  # fmt: skip
    print(HEAD)
    print("-" * len(HEAD))
    print(row("sdbroker MODEL (bench/sim_des.py, same plan)", model, len(plan)))
    as_result = Result(
        waits=real.waits, warm=real.warm, rewaits=real.rewaits, kept=real.kept,
        reclaims=real.reclaimed, mid_generation=real.mid_generation, created=-1,
        warming_s=real.warming_s,
        warm_s=real.ready_idle_s, in_use_s=real.claimed_active_s, claimed_idle_s=real.claimed_idle_s,
    )  # fmt: skip
    print(row(policy.name, as_result, len(plan)))
    print(f"  real code: {len(real.unserved)} never served; {real.claim_calls} claim calls; "
          f"{real.stuck_tasks} tasks ignored their cancel; wall {real.wall:.0f} s")  # fmt: skip
    if real.churn is not None:
        print(f"  {real.churn.line()}")
    print("  rules of a valid run:")
    for line in real.rules():
        print(f"    - {line}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--gpus", type=int, default=50)
    ap.add_argument("--span", type=float, default=12 * 3600, help="simulated seconds of the day")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--buffer", type=int, default=5, help="warm pods, every policy")
    ap.add_argument("--reload", type=float, default=Policy("", "").reload,
                    help='published: seconds between reloads of "Too many users" (an assumption)')  # fmt: skip
    ap.add_argument(
        "--presence", type=float, default=120.0, help="presence model: seconds after the last tab"
    )
    ap.add_argument("--no-real", action="store_true", help="skip the real-code cross-check")
    ap.add_argument("--real-users", type=int, default=20)
    ap.add_argument("--real-gpus", type=int, default=10)
    ap.add_argument("--real-span", type=float, default=3600.0)
    ap.add_argument(
        "--scale", type=float, default=20.0, help="ScaledClock factor of the cross-check"
    )
    ap.add_argument("--backend", choices=["kubernetes", "agones"], default="kubernetes",
                    help="backend of the real-code cross-check")  # fmt: skip
    args = ap.parse_args()
    print(f"GPU economy, {provenance()}; prints, never asserts")
    print("rules of a valid run: model figures are clock-free (an event heap; every interval exact, "
          "GPU time integrated by interval); the real-code cross-check integrates by the actual step, "
          "scales every clock constant with its clock, and is INVALID when its loop lag p99 exceeds 1% "
          "of its shortest interval (its own rules and verdict are printed with it)")  # fmt: skip
    des_tables(args)
    if not args.no_real:
        cross_check(args)


if __name__ == "__main__":
    main()
