"""process_* of a whole replica under SDB_WORKERS > 1, and the event loop's lag.

prometheus_client's MultiProcessCollector sums the workers' counters but leaves
out the process collector (prometheus_client/multiprocess.py: it reads only the
*.db files), so a scrape that lands on one worker would show no process_* at
all. Here the worker being scraped reads /proc for every live worker of its
supervisor (the pids in the multiprocess directory's file names) and for the
supervisor, and adds them up: CPU seconds, memory and open file descriptors of
the replica as a whole, as a single process broker reports its own. The start
time is the earliest, the fd limit the smallest.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Gauge
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

LOOP_LAG = Gauge(
    "sdbroker_event_loop_lag_seconds",
    "How late the event loop ran a 0.25 s timer, the worst in the last 5 s: a blocked loop "
    "delays every request of this process.",
    multiprocess_mode="livemax",  # SDB_WORKERS > 1: the worst live worker
)
LAG_TICK = 0.25
LAG_WINDOW = 5.0
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")
# How to add up one metric over the processes: sum, min (start time, fd limit).
_LOWEST = {"process_start_time_seconds", "process_max_fds"}


async def watch_loop_lag() -> None:
    """Sleep LAG_TICK again and again and publish the largest overshoot per window."""
    worst, window_end = 0.0, time.monotonic() + LAG_WINDOW
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_TICK)
        now = time.monotonic()
        worst = max(worst, now - before - LAG_TICK)
        if now >= window_end:
            LOOP_LAG.set(worst)
            worst, window_end = 0.0, now + LAG_WINDOW


def replica_pids(directory: str) -> list[int]:
    """This worker, its supervisor and its live sibling workers (by their metric files;
    a dead worker's pid, perhaps reused by another process, is not the supervisor's child)."""
    supervisor = os.getppid()
    pids = {os.getpid()}
    for path in Path(directory).glob("*.db"):
        found = _PID_IN_NAME.search(path.name)
        if found:
            pids.add(int(found.group(1)))
    return [supervisor, *sorted(p for p in pids if _parent(p) == supervisor)]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # after "pid (comm) state": ppid


class ReplicaProcesses:
    """A collector: the process_* families summed over replica_pids."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, Metric] = {}
        for pid in replica_pids(self.directory):
            # It asks a callable for the pid, read into /proc/<pid> (prometheus_client
            # process_collector.py, ProcessCollector.__init__).
            collector = ProcessCollector(pid=functools.partial(str, pid), registry=None)
            for family in collector.collect():
                if not family.samples:
                    continue
                value = family.samples[0].value
                kept = totals.get(family.name)
                if kept is None:
                    totals[family.name] = family
                    continue
                old = kept.samples[0]
                new = min(old.value, value) if family.name in _LOWEST else old.value + value
                kept.samples[0] = old._replace(value=new)
        return list(totals.values())
