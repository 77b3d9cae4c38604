"""Named, guarded background tasks with an ordered shutdown (after kopf's aiotasks).

A task that crashes is logged with its name and started again after a pause,
so one bug in, say, the activity flusher never silently stops the reaper.
Shutdown cancels in reverse start order and waits a bounded time for each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
Factory = Callable[[], Awaitable[None]]


class Tasks:
    def __init__(self, *, restart_delay: float = 1.0) -> None:
        self.restart_delay = restart_delay
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, factory: Factory) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name!r} already running")
        self._tasks[name] = asyncio.create_task(self._guard(name, factory), name=name)

    async def _guard(self, name: str, factory: Factory) -> None:
        while True:
            raise_if_cancelled()
            try:
                await factory()
                log.warning("task %s exited unexpectedly; restarting", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s crashed; restarting in %.1fs", name, self.restart_delay)
            await asyncio.sleep(self.restart_delay)

    async def stop(self, timeout: float = 5.0) -> None:
        for name in reversed(list(self._tasks)):
            task = self._tasks.pop(name)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.error("task %s did not stop within %.1fs", name, timeout)


def raise_if_cancelled() -> None:
    """Stop a loop whose cancel a library swallowed.

    Some client libraries catch CancelledError deep inside a call and carry on;
    the task then keeps `cancelling()` > 0 while its loop runs forever and
    shutdown hangs. Long-running loops call this at every turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
