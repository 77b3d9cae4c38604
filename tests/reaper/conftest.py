"""In-process reclaim cycles against a real Redis and real stub WebUI processes.

Time is a `FakeClock` handed to the store and the cycle, so "15 minutes
later" is one call; the stub's generations still take real (short) time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from fleet import Claim, Fleet, FleetSpec, FleetStore, connect_redis, keys, make_probe, parse_spec
from fleet.backends.local import LocalBackend
from reaper import ReapCycle
from tests.support.clock import StepClock
from tests.support.procs import STUB, kill_pods

SPEC = """\
backend: local
idle_timeout: {idle}
max_session: {max_session}
outputs: {outputs}
profiles:
  - name: default
    max: 20
    buffer: 0
    probe: a1111
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "{delay}"]
      stop_grace: 1s
"""
IDLE = 60.0


class FakeClock(StepClock):
    def __init__(self) -> None:
        super().__init__(time.time())


async def until(predicate: Callable[[], Awaitable[object]], timeout: float = 20.0) -> None:
    """Poll an async condition until true (a liveness bound, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s"
        await asyncio.sleep(0.05)


def reclaims(reason: str, profile: str = "default") -> float:
    return (
        REGISTRY.get_sample_value("sdbroker_reclaims_total", {"profile": profile, "reason": reason})
        or 0.0
    )


class Harness:
    """A fleet without a controller: pods are started here, claimed, then left to the reaper."""

    def __init__(self, redis_url: str, spec: FleetSpec, data_dir: Path) -> None:
        self.redis_url = redis_url
        self.spec = spec
        self.clock = FakeClock()
        self.redis = connect_redis(redis_url)
        self.store = FleetStore(self.redis, clock=self.clock)
        self.backend = LocalBackend(spec, data_dir)
        self.data_dir = data_dir
        self.http = aiohttp.ClientSession()
        self.fleet = Fleet(self.store, self.backend, spec, self.http, clock=self.clock)
        self.extra: list[Any] = []

    async def start(self) -> None:
        await self.backend.start()
        await self.store.mark_built()

    async def close(self) -> None:
        await self.backend.stop_all()
        kill_pods(self.data_dir)
        for redis in self.extra:
            await redis.aclose()
        await self.http.close()
        await self.redis.aclose()

    async def pod(self) -> str:
        """Start a stub WebUI and offer it as Ready."""
        profile = self.spec.profiles[0]
        pod_id = f"default-{secrets.token_hex(4)}"
        assert await self.store.add_pod(pod_id, profile.name, profile.max)
        rec = await self.backend.create(profile, pod_id)
        await self.store.set_pod_fields(pod_id, addr=rec.addr)
        probe = make_probe("a1111")
        await until(lambda: probe.ready(self.http, rec.addr), 30)
        assert await self.store.mark_ready(pod_id, profile.name, rec.addr)
        return pod_id

    async def sessions(self, *users: str) -> dict[str, Claim]:
        """Each user claims a fresh pod (started concurrently)."""
        await asyncio.gather(*(self.pod() for _ in users))
        claims = {}
        for user in users:
            claim = await self.fleet.claim(user)
            assert isinstance(claim, Claim), claim
            claims[user] = claim
        return claims

    def cycle(self, store: FleetStore | None = None, **kw: Any) -> ReapCycle:
        kw.setdefault("backend", self.backend)
        return ReapCycle(store or self.store, self.spec, self.http, clock=self.clock, **kw)

    def second_store(self) -> FleetStore:
        """Another connection pool, as another broker replica or CronJob would have."""
        redis = connect_redis(self.redis_url)
        self.extra.append(redis)
        return FleetStore(redis, clock=self.clock)

    async def claim_of(self, user: str) -> Claim | None:
        return await self.store.lookup(user)

    async def audit(self) -> list[dict[str, str]]:
        return [fields for _, fields in await self.redis.xrange(keys.AUDIT)]

    async def pod_state(self, pod_id: str) -> str | None:
        return await self.redis.hget(keys.pod(pod_id), "state")


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness(redis_url: str, tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    made: list[Harness] = []

    async def make(*, idle: float = IDLE, max_session: str = "null", delay: float = 0.2) -> Harness:
        text = SPEC.format(
            idle=idle, max_session=max_session, outputs=tmp_path / "out", stub=STUB, delay=delay
        )
        h = Harness(redis_url, parse_spec(text), tmp_path / "data")
        made.append(h)
        await h.start()
        return h

    yield make
    for h in made:
        await h.close()
