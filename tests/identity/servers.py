"""An aiohttp app served from a background thread, so sync tests can run real servers.

The OpenID provider and the IAP key server run in the test process (their
knobs are plain attributes a test sets) while the brokers are separate
processes that reach them over loopback.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from aiohttp import web

from tests.support.procs import free_port


class ThreadedServer:
    def __init__(self, app: web.Application, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, coro) -> object:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def start(self) -> ThreadedServer:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
