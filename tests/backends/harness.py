"""A fleet assembled in-process (store, backend, controller, Fleet) on a real Redis.

The same harness runs over every backend, so one contract suite checks that
local processes, plain Kubernetes pods and Agones GameServers behave alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from fleet import (
    Backend,
    Claim,
    Controller,
    Doorbell,
    Fleet,
    FleetSpec,
    FleetStore,
    Waiting,
    connect_redis,
    make_backend,
)
from fleet.render import render_profile
from fleet.spec import parse_spec
from tests.kubeapi import KubeSim, ProcessRunner
from tests.kubeapi.relay import Relay
from tests.support.procs import STUB

LOCAL = """\
backend: local
outputs: {outputs}
profiles:
  - name: default
    min: {min}
    buffer: {buffer}
    max: {max}
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3"]
      stop_grace: 3s
"""
KUBERNETES = """\
backend: kubernetes
profiles:
  - name: default
    min: {min}
    buffer: {buffer}
    max: {max}
    kubernetes:
      namespace: sd
      image: example/sd-webui:test
      gpus: 1
      volumes: {{models: null, outputs: null}}
"""
AGONES = """\
backend: agones
profiles:
  - name: default
    min: {min}
    buffer: {buffer}
    max: {max}
    agones:
      namespace: sd
      fleet: webui
      image: example/sd-webui:test
      gpus: 1
      volumes: {{models: null, outputs: null}}
"""
AUTOSCALER_SYNC = 0.3  # seconds: the sim's FleetAutoscaler resizes the Fleet this often
STUB_RUNNER = ProcessRunner(
    [
        "{python}",
        str(STUB),
        "--host",
        "{ip}",
        "--port",
        "{port}",
        "--pod-id",
        "{name}",
        "--delay",
        "0.3",
    ],
    ready_path="/internal/ping",
)


@dataclass
class Harness:
    kind: str
    spec: FleetSpec
    store: FleetStore
    backend: Backend
    controller: Controller
    fleet: Fleet
    http: aiohttp.ClientSession
    sim: KubeSim | None = None
    relay: Relay | None = None

    async def until(
        self, predicate: Callable[[], object], within: float = 30.0, what: str = ""
    ) -> object:
        deadline = time.monotonic() + within
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind}: timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def counts(self) -> dict[str, int]:
        return await self.store.counts("default")

    async def ready(self, n: int) -> None:
        await self.until(lambda: self._at_least("ready", n), what=f"{n} ready pods")

    async def _at_least(self, state: str, n: int) -> bool:
        return (await self.counts())[state] >= n

    async def claim(self, user: str) -> Claim | Waiting:
        return await self.fleet.claim(user)

    async def whoami(self, claim: Claim) -> dict:
        async with self.http.get(claim.addr + "/stub/whoami") as resp:
            return await resp.json()


@contextlib.asynccontextmanager
async def harness(kind: str, redis_url: str, tmp: Path, *, min: int = 0, buffer: int = 2, max: int = 4,
                  nodes: int = 6, relay: bool = False, exec_ttl: float | None = None,
                  top: str = "", start_delay: float = 0.0,
                  gpus_per_node: int = 1) -> AsyncIterator[Harness]:  # fmt: skip
    """`relay`: the backend reaches the simulator through a fault transport (h.relay);
    `exec_ttl`: with exec-plugin tokens valid that long; `top`: more top-level fleet YAML;
    `start_delay`: simulated seconds a pod takes to start (image pull), before its process."""
    sim: KubeSim | None = None
    path: Relay | None = None
    stack = contextlib.AsyncExitStack()
    async with stack:
        if kind == "local":
            text = top + LOCAL.format(
                outputs=tmp / "outputs", min=min, buffer=buffer, max=max, stub=STUB
            )
        else:
            sim = await stack.enter_async_context(
                KubeSim(
                    nodes=nodes,
                    gpus_per_node=gpus_per_node,
                    process_runner=STUB_RUNNER,
                    seed=7,
                    autoscaler_sync=AUTOSCALER_SYNC,
                    start_delay=start_delay,
                )
            )
            config = sim.kubeconfig("sd", exec_ttl=exec_ttl)
            if relay:
                path = await stack.enter_async_context(Relay(sim.host, sim.port))
                config["clusters"][0]["cluster"]["server"] = path.url
            kubeconfig = tmp / "kubeconfig"
            kubeconfig.write_text(json.dumps(config))
            os.environ["KUBECONFIG"] = str(kubeconfig)
            template = AGONES if kind == "agones" else KUBERNETES
            text = top + template.format(min=min, buffer=buffer, max=max)
        spec = parse_spec(text)
        redis = connect_redis(redis_url)
        stack.push_async_callback(redis.aclose)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        store = FleetStore(redis)
        doorbell = Doorbell()  # the backend wakes the controller on each watch event
        backend = make_backend(spec, tmp / "data", on_change=doorbell.wake)
        await backend.start()
        stack.push_async_callback(backend.close)
        if kind == "agones":
            await install_fleet(backend, spec)
        fleet = Fleet(store, backend, spec, http, queue_grace=60)
        controller = Controller(
            store, backend, lambda: fleet.spec, http, interval=0.3, doorbell=doorbell
        )
        task = asyncio.create_task(controller.run())

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if kind == "local":
                await backend.stop_all()  # type: ignore[attr-defined]

        stack.push_async_callback(stop)
        yield Harness(kind, spec, store, backend, controller, fleet, http, sim, path)


async def install_fleet(backend: Backend, spec: FleetSpec) -> None:
    """What `sdbroker fleet render | kubectl apply -f -` does. A FleetAutoscaler (rendered
    before the broker owned the Fleet's size) gets the simulator's fast sync, not 10 s."""
    custom = backend.custom  # type: ignore[attr-defined]
    for profile in spec.profiles:
        for doc in render_profile(profile):
            ns = doc["metadata"]["namespace"]
            if doc["kind"] == "Fleet":
                await custom.create_namespaced_custom_object("agones.dev", "v1", ns, "fleets", doc)
            elif doc["kind"] == "FleetAutoscaler":
                doc["spec"].pop("sync", None)  # the simulator's AUTOSCALER_SYNC
                await custom.create_namespaced_custom_object(
                    "autoscaling.agones.dev", "v1", ns, "fleetautoscalers", doc
                )
