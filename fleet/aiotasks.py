"""Named, guarded background tasks with an ordered shutdown (after kopf's aiotasks).

The one way the broker runs background work. Two shapes:
- `start(name, loop)`: a long-running loop (the controller, the event listener);
- `every(name, interval, job)`: periodic work (the activity flush, the reaper).

A loop that crashes or a job that raises is logged with its name and tried
again after a backoff that doubles with each failure in a row, with jitter
(kopf's timers and daemons likewise sleep a `backoff` after an error before
retrying; jitter keeps N replicas from retrying in step), so one bug in, say,
the activity flusher never silently stops the reaper, nor spins a core.
Each task's health (running, last success, last error) is kept for readiness.

`stop` first stops taking work (loops are cancelled in reverse start order,
periodic tasks start no new run), then waits, bounded, for the runs in flight
to finish: a flush half done when the process is told to stop is completed,
not cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
Factory = Callable[[], Awaitable[object]]
MAX_BACKOFF = 60.0  # a failing task is tried at least this often (or at its interval, if longer)
STOP_TIMEOUT = 10.0  # seconds a run in flight may take to finish once stop is asked


@dataclass(slots=True)
class TaskHealth:
    """What readiness shows of one task; times are Unix seconds."""

    periodic: bool
    running: bool = False  # a periodic run in progress, or a loop alive
    last_success: float | None = None
    last_error: str = ""  # the exception's type only: readyz answers anonymous callers
    last_error_at: float | None = None
    failures_in_row: int = 0
    retry_in: float = 0.0  # the backoff chosen after the last failure


def backoff(
    failures: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """base * 2^(failures-1), capped, with "equal jitter": somewhere in [half, all] of it."""
    delay = min(cap, base * 2.0 ** max(0, failures - 1))
    return delay / 2 + rand() * delay / 2


class Tasks:
    def __init__(
        self,
        *,
        restart_delay: float = 1.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.restart_delay = restart_delay
        self.clock = clock
        self.rand = rand
        self.health: dict[str, TaskHealth] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    def start(self, name: str, factory: Factory) -> None:
        """Run a loop until stop; restarted with backoff when it crashes or returns."""
        self._add(name, self._guard(name, factory), periodic=False)

    def every(self, name: str, interval: float, job: Factory) -> None:
        """Run `job` every `interval` seconds (first after one interval), one run at a time."""
        self._add(name, self._periodic(name, interval, job), periodic=True)

    def _add(self, name: str, body: Coroutine[Any, Any, None], *, periodic: bool) -> None:
        if name in self._tasks:
            body.close()  # never awaited: no warning
            raise ValueError(f"task {name!r} already running")
        self.health[name] = TaskHealth(periodic=periodic)
        self._tasks[name] = asyncio.create_task(body, name=name)

    def _failed(self, name: str, exc: BaseException, base: float, cap: float) -> float:
        health = self.health[name]
        health.failures_in_row += 1
        health.last_error = type(exc).__name__
        health.last_error_at = self.clock()
        health.retry_in = backoff(health.failures_in_row, base, cap, self.rand)
        return health.retry_in

    async def _guard(self, name: str, factory: Factory) -> None:
        health = self.health[name]
        while True:
            raise_if_cancelled()
            health.running = True
            began = time.monotonic()
            try:
                await factory()
                raise RuntimeError(f"task {name} returned")  # loops run until cancelled
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - began > MAX_BACKOFF:
                    health.failures_in_row = 0  # it ran a good while: a fresh failure
                delay = self._failed(name, exc, self.restart_delay, MAX_BACKOFF)
                log.exception("task %s crashed; restarting in %.1fs", name, delay)
            finally:
                health.running = False
            await asyncio.sleep(delay)

    async def _periodic(self, name: str, interval: float, job: Factory) -> None:
        health = self.health[name]
        delay = interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            health.running = True
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._failed(name, exc, interval, max(interval, MAX_BACKOFF))
                log.exception("task %s failed; trying again in %.1fs", name, delay)
            else:
                health.last_success = self.clock()
                health.failures_in_row, health.retry_in, delay = 0, 0.0, interval
            finally:
                health.running = False

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop taking work (loops cancelled, newest first; no new periodic runs), then wait
        for the periodic runs in flight, all together, at most `timeout`; whatever outlasts
        it is cancelled."""
        self._stopping.set()
        for name in [n for n in reversed(list(self._tasks)) if not self.health[n].periodic]:
            task = self._tasks.pop(name)
            task.cancel()
            await self._wait(name, {task}, timeout)
        periodic, self._tasks = self._tasks, {}
        await self._wait(", ".join(periodic), set(periodic.values()), timeout)

    async def _wait(self, names: str, tasks: set[asyncio.Task[None]], timeout: float) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.error("tasks %s did not finish within %.1fs; cancelling them", names, timeout)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task %s ended with %r", task.get_name(), task.exception())


def raise_if_cancelled() -> None:
    """Stop a loop whose cancel a library swallowed.

    Some client libraries catch CancelledError deep inside a call and carry on;
    the task then keeps `cancelling()` > 0 while its loop runs forever and
    shutdown hangs. Long-running loops call this at every turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
