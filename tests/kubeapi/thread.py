"""A `KubeSim` on its own event loop in a background thread.

For tests whose own thread blocks (sync fixtures that start a broker process
and wait for it, sync Playwright): an in-loop simulator would stall while the
test blocks, and the process under test would wait on it forever.

    with KubeSimThread(nodes=2, time_scale=60) as cluster:
        cluster.sim.write_kubeconfig(path)
        cluster.call(lambda sim: sim.evict("sd", "webui-abcde"))
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .sim import KubeSim

T = TypeVar("T")


class KubeSimThread:
    def __init__(self, **options: Any) -> None:
        self.options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sim: KubeSim | None = None

    @property
    def sim(self) -> KubeSim:
        """The simulator; read-only use from this thread, anything else through `call`."""
        if self._sim is None:
            raise RuntimeError("KubeSimThread is not started")
        return self._sim

    @property
    def url(self) -> str:
        return self.sim.url

    def start(self, timeout: float = 10.0) -> KubeSimThread:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubesim", daemon=True)
        self._thread.start()
        self._sim = self._submit(KubeSim(**self.options).start(), timeout)
        return self

    def call(self, fn: Callable[[KubeSim], T], timeout: float = 30.0) -> Any:
        """Run `fn(sim)` on the simulator's loop (awaiting it if it returns a coroutine)."""

        async def run() -> Any:
            result = fn(self.sim)
            return await result if inspect.isawaitable(result) else result

        return self._submit(run(), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None:
            return
        try:
            if self._sim is not None:
                self._submit(self._sim.stop(), timeout)  # raises on a schema violation
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
            self._loop.close()
            self._loop, self._thread, self._sim = None, None, None

    def __enter__(self) -> KubeSimThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _submit(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)
