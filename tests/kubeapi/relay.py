"""A fault transport: a TCP relay between a client and the simulator that can go silent.

`blackhole()` makes the connections open now stop forwarding, both ways,
while their sockets stay open: no FIN, no RST, nothing. That is what a client
sees when a NAT, a load balancer or a lost node drops a flow without a word,
and what only deadlines and keepalive get a client out of. Connections made
afterwards are relayed as usual (a new connection takes a path that works),
unless `blackhole(new=True)`: then they are accepted and never answered.

    relay = await Relay(sim.host, sim.port).start()
    ... point the kubeconfig at relay.url ...
    relay.blackhole()
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Flow:
    silent: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Relay:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0  # accepted so far
        self._flows: set[_Flow] = set()
        self._silent_new = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for flow in self._flows:
            for writer in flow.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def blackhole(self, *, new: bool = False) -> int:
        """Silence every open connection (and, with `new`, those to come); returns how many."""
        for flow in self._flows:
            flow.silent = True
        self._silent_new = new
        return len(self._flows)

    def heal(self) -> None:
        """New connections are relayed again (silenced ones stay silent: their flow is lost)."""
        self._silent_new = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        flow = _Flow(silent=self._silent_new, writers=[writer])
        self._flows.add(flow)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if flow.silent:
                await self._swallow(reader)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            flow.writers.append(up_writer)
            await asyncio.gather(
                self._pump(reader, up_writer, flow), self._pump(up_reader, writer, flow)
            )
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Ended by stop(): returns, as CPython 3.11's start_server callback
            # (asyncio/streams.py, connection_made) calls task.exception() on a
            # cancelled task and reports the CancelledError; 3.12 checks first.
            pass
        finally:
            self._tasks.discard(task)
            if not flow.silent:
                self._flows.discard(flow)
                for w in flow.writers:
                    w.close()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        await asyncio.Event().wait()  # even after the client's FIN: no answer, ever

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: _Flow
    ) -> None:
        while data := await reader.read(65536):
            if flow.silent:
                continue  # read and dropped: the bytes vanish on the way
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        if flow.silent:
            await asyncio.Event().wait()  # the other side's end never arrives either
        with contextlib.suppress(OSError):
            writer.write_eof()
