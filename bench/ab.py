"""Compare one benchmark at two commits, runs interleaved: is a change within noise?

    .venv/bin/python bench/ab.py BASE [HEAD] [--only claims] [--runs 3]

Each commit is checked out in a git worktree under $TMPDIR/sdbroker-ab/ (outside the
repo, where no linter or test run finds the copies) and its own
bench/run_all.py runs there (its own code, this venv: a commit that needs other
locked packages is not comparable this way). Runs alternate, base first, so a
machine that gets busier or quieter over the minutes weighs on both sides alike.
Every latency table row with p50/p99 columns is reported as the median over the
runs and the spread (lowest-highest), so one noisy run neither hides nor fakes a
change. Each run's one-minute load average is printed beside it: a run that starts
on a machine busy with something else is no measure, and the script says so.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/ab.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench.harness import REPO, Table, median, say

PLACE = Path(tempfile.gettempdir()) / "sdbroker-ab"

#: A run that starts with more runnable processes than this per core is flagged: the
#: benches themselves load the machine, but only after they start.
BUSY_PER_CORE = 1.5
_ROW = re.compile(r"^\|(.+)\|\s*$")
_MS = re.compile(r"([\d.]+)\s*(ms|s)\b")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit before the change")
    parser.add_argument("head", nargs="?", default="HEAD", help="the commit after (HEAD)")
    parser.add_argument("--only", default="claims", help="one bench of bench/run_all.py")
    parser.add_argument("--runs", type=int, default=3, help="runs per commit (default 3)")
    parser.add_argument("--quick", action="store_true", help="the bench's --quick sizes")
    return parser.parse_args(argv)


def worktree(rev: str) -> tuple[str, Path]:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    path = PLACE / sha
    if not (path / "bench" / "run_all.py").exists():
        subprocess.run(["git", "worktree", "add", "-f", "--detach", str(path), sha],
                       cwd=REPO, capture_output=True, check=True)  # fmt: skip
    return sha, path


def latencies(markdown: str) -> dict[str, tuple[float, float]]:
    """row label -> (p50, p99) in ms, from every table with p50 and p99 columns."""
    found: dict[str, tuple[float, float]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            header = []
            continue
        cells = [c.strip() for c in match.group(1).split("|")]
        if not header:
            header = cells
            continue
        if set(cells[0]) <= {"-", ":"} or "p50" not in header or "p99" not in header:
            continue
        p50, p99 = (_ms(cells[header.index(k)]) for k in ("p50", "p99"))
        if p50 is not None and p99 is not None:
            found[cells[0]] = (p50, p99)
    return found


def _ms(cell: str) -> float | None:
    match = _MS.search(cell)
    if not match:
        return None
    value = float(match.group(1))
    return value * 1000 if match.group(2) == "s" else value


def one_run(
    sha: str, path: Path, args: argparse.Namespace, n: int
) -> dict[str, tuple[float, float]]:
    load = os.getloadavg()[0]
    busy = load > BUSY_PER_CORE * (os.cpu_count() or 1)
    out = PLACE / f"{sha}-{n}.md"
    command = [sys.executable, "bench/run_all.py", "--only", args.only, "--output", str(out)]
    say(f"{sha} run {n + 1}: load {load:.1f}{' (BUSY: this run is no measure)' if busy else ''}")
    env = {**os.environ, "PYTHONPATH": str(path)}
    done = subprocess.run([*command, *(["--quick"] if args.quick else [])], cwd=path, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"{sha}: the bench failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return latencies(out.read_text())


def spread(values: list[float]) -> str:
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides = [worktree(args.base), worktree(args.head)]
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {sha: [] for sha, _ in sides}
    for n in range(args.runs):
        for sha, path in sides:
            runs[sha].append(one_run(sha, path, args, n))
    (base, _), (head, _) = sides
    rows = [r for r in runs[base][0] if all(r in run for side in runs.values() for run in side)]
    table = Table(["latency (ms)", f"p50 {base}", f"p50 {head}", f"p99 {base}", f"p99 {head}"])
    for row in rows:
        cells = [spread([run[row][i] for run in runs[sha]]) for i in (0, 1) for sha in (base, head)]
        table.add(row, *cells)
    print(f"## {args.only}: {base} against {head}, {args.runs} interleaved runs each\n")
    print(table.markdown())
    print("\nmedian (lowest-highest) of the runs; a p99 of one run is itself an estimate.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
