"""`make bench`: every benchmark in turn, then bench/RESULTS.md with the machine and the tables.

Each benchmark starts and stops what it needs (Redis, brokers, pods, nginx,
configurable-http-proxy); one that fails is reported as failed and the others
still run. Figures are printed, never asserted.

    .venv/bin/python bench/run_all.py [--only proxy,claims] [--quick] [--output bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run_all.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench import claims, download, proxy, reaper, websockets
from bench.harness import BENCH, CACHE, Report, Table, machine, say

BENCHES = {
    # name: (run, arguments for --quick)
    # As it ships: SDB_WORKERS=auto, one broker process per usable CPU.
    "proxy": (proxy.run, ["--duration", "1", "--warmup", "1", "--reps", "1", "--sizes", "1k"]),
    # The same with SDB_WORKERS=1: what one Python process does.
    "proxy-1-process": (
        lambda argv: one_process(proxy.run([*argv, "--processes", "1", "--no-paths"])),
        ["--duration", "1", "--warmup", "1", "--reps", "1", "--sizes", "1k"],
    ),
    "claims": (claims.run, ["--users", "20"]),
    "websockets": (websockets.run, ["--connections", "200"]),
    "download": (download.run, ["--size-mib", "64", "--reps", "1"]),
    "reaper": (reaper.run, ["--sessions", "2000", "--idle", "10"]),
}


def one_process(report: Report) -> Report:
    report.title += ", SDB_WORKERS=1 (one broker process)"
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES)
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, to check the benches work"
    )
    parser.add_argument(
        "--output", type=Path, help="default bench/RESULTS.md (bench/.cache/ with --quick)"
    )
    return parser.parse_args(argv)


def render(info: dict[str, str], reports: list[Report], seconds: float, load_end: str) -> str:
    table = Table(["machine", ""])
    for key, value in info.items():
        table.add(key, value)
    table.add("load average at end", load_end)
    table.add("duration of the whole run", f"{seconds / 60:.1f} min")
    parts = [
        "# sdbroker benchmarks",
        "",
        "Written by `make bench` (`bench/run_all.py`). Printed, never asserted: targets sit beside the "
        "figures, marked met or MISSED. Every load targets loopback on this one machine, so the load "
        "generator, the proxies and the upstream share its cores; a load average above the core count "
        "means other work ran meanwhile and the figures are noisy.",
        "",
        table.markdown(),
        "",
    ]
    parts += [r.markdown() for r in reports]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [n for n in wanted if n not in BENCHES]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}",
            file=sys.stderr,
        )
        return 2
    info = machine()
    started = time.monotonic()
    reports: list[Report] = []
    failed = 0
    for name in wanted:
        run, quick = BENCHES[name]
        say(f"--- {name} ---")
        try:
            report = run(quick if args.quick else [])
        except Exception as exc:
            failed += 1
            traceback.print_exc()
            report = Report(f"{name}: FAILED", notes=[f"{type(exc).__name__}: {str(exc)[:2000]}"])
        print(report.markdown(), flush=True)
        reports.append(report)
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = render(info, reports, time.monotonic() - started, load_end)
    output = args.output or (CACHE / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    say(f"wrote {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
