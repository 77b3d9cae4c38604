"""The Kubernetes client against the faults of real networks and API servers.

Each test runs the real backend through the simulator's fault transports: a
relay that goes silent with its sockets open, 429s with Retry-After, 503
bursts, exec-plugin tokens that expire. Timing constants are shortened with
`shorten`, which leaves a module that has none alone, so the same test runs
(and fails) on code from before the deadlines existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fleet import Claim, Controller, FleetStore, PodRecord, Waiting, connect_redis, service
from tests.backends.harness import Harness, harness
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC


def shorten(monkeypatch: pytest.MonkeyPatch, module: str, **values: object) -> None:
    try:
        target = importlib.import_module(module)
    except ImportError:
        return
    for name, value in values.items():
        monkeypatch.setattr(target, name, value, raising=False)


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten(monkeypatch, "fleet.backends.kuberest", READ_TIMEOUT=1.0, CONNECT_TIMEOUT=1.0)
    shorten(monkeypatch, "fleet.backends.kubewatch", WATCH_SECONDS=2, WATCH_SLACK=1.0)


def pods_alive(h: Harness) -> set[str]:
    assert h.sim is not None
    return {
        p["metadata"]["name"]
        for p in h.sim.pods("sd")
        if not p["metadata"].get("deletionTimestamp")
    }


# --- 3. deadlines, keepalive, bounded passes ------------------------------------------------


@pytest.mark.usefixtures("short_deadlines")
async def test_a_path_that_dies_in_silence_hangs_nothing(redis_url: str, tmp_path: Path) -> None:
    """Every open connection to the API server goes silent (no FIN, no RST): calls give up
    at their deadline and reconnect, the watch at its own, and the controller deletes the
    released pod and sees the cluster again. Before: the pass hung on the dead connection
    for ever, renewing its lead, and the watch cache froze."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=3, relay=True) as h:
        assert h.sim is not None and h.relay is not None
        h.controller.pass_timeout = 5.0
        await h.ready(1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        await h.ready(1)  # the buffer refilled: there is a warm pod besides ann's
        (warm,) = pods_alive(h) - {claim.pod}
        assert h.relay.blackhole() > 0
        await h.fleet.release("ann", "admin")
        await h.until(
            lambda: claim.pod not in pods_alive(h), within=40, what="released pod deleted"
        )
        h.sim.evict("sd", warm)  # seen only through a watch that reconnected
        # 40 s: liveness bounds, far past the shortened deadlines (1-3 s) and a 10 s backoff,
        # for a machine running two test files at once (one failure at 20 s under extra load)
        await h.until(lambda: _gone_from_index(h, warm), within=40, what="eviction seen")


async def _gone_from_index(h: Harness, pod: str) -> bool:
    return await h.store.pod(pod) is None or (await h.store.pod(pod)).state == "deleting"


async def test_connections_to_the_api_server_keep_alive(redis_url: str, tmp_path: Path) -> None:
    """TCP keepalive finds a dead path under an idle pooled connection or a quiet watch."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        api = h.backend.api  # type: ignore[attr-defined]
        connector = api.rest_client.pool_manager.connector
        sockets = [
            proto.transport.get_extra_info("socket")
            for conns in connector._conns.values()  # idle pooled connections
            for proto, _ in conns
            if proto.transport is not None
        ]
        assert sockets, "no pooled connection to look at"
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30


class HangingBackend(FakeBackend):
    """Its reads hang while `hang` is set, as a call on a dead connection without a deadline."""

    hang = True
    reads = 0

    async def observe(self) -> list[PodRecord]:
        self.reads += 1
        if self.hang:
            await asyncio.Event().wait()
        return await super().observe()


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[None]:
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_pass_that_hangs_is_cut_short(redis_url: str) -> None:
    """A pass stuck on a call is ended at its bound: the next one runs (and, once the
    platform answers, does the work). Before: one pass for ever, the lead renewed."""
    redis = connect_redis(redis_url)
    backend = HangingBackend(SPEC)
    async with aiohttp.ClientSession() as http:
        controller = Controller(FleetStore(redis), backend, lambda: SPEC, http, interval=0.1)
        controller.pass_timeout = 0.5
        async with running(controller):
            for _ in range(100):
                if backend.reads >= 2:
                    break
                await asyncio.sleep(0.05)
            assert backend.reads >= 2, "the first pass never ended"
            backend.hang = False
            for _ in range(100):
                if len(backend.created) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(backend.created) == 2  # the buffer, made once the platform answered
    await redis.aclose()


# --- 4. transient API errors never end a healthy pod -------------------------------------


async def test_a_503_burst_on_the_claim_label_keeps_both_pods(
    redis_url: str, tmp_path: Path
) -> None:
    """Three 503s (Retry-After: 1) on pod PATCH: retried, the claim lands on a warm pod.
    Before: each 503 ended the pod being claimed; both warm pods were deleted."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=2, max=4) as h:
        assert h.sim is not None
        await h.ready(2)
        warm = pods_alive(h)
        h.sim.inject_api_error(503, verb="patch", resource="pods", count=3, retry_after=1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim) and claim.pod in warm
        assert warm <= pods_alive(h), "a warm pod was deleted for an API hiccup"
        labels = h.sim.pod("sd", claim.pod)["metadata"]["labels"]
        assert labels["sdbroker.io/state"] == "claimed"


async def test_an_api_outage_queues_the_user_and_keeps_the_pod(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """429s past the retry budget: the user waits, nothing is deleted, and once the API
    answers again their next request binds the very pod they were given."""
    monkeypatch.setattr(service, "BIND_WAIT", 0.5)
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=2) as h:
        assert h.sim is not None
        await h.ready(1)
        (warm,) = pods_alive(h)
        rule = h.sim.inject_api_error(429, verb="patch", resource="pods", count=50, retry_after=1)
        first = await h.claim("ann")
        assert isinstance(first, Waiting)
        assert warm in pods_alive(h)
        assert (await h.store.pod(warm)).state == "claimed"  # kept for ann, offered to nobody
        rule.remaining = 0
        claim = await h.claim("ann")
        assert isinstance(claim, Claim) and claim.pod == warm
        assert h.sim.pod("sd", warm)["metadata"]["labels"]["sdbroker.io/state"] == "claimed"


# --- 5. exec-plugin credentials are refreshed ----------------------------------------------


async def test_exec_credentials_are_refreshed_before_they_expire(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens from an exec plugin (gke-gcloud-auth-plugin) that last 4 s: the plugin is run
    again as each expires, and the broker works on. Before: 401 on every call after 4 s."""
    shorten(monkeypatch, "fleet.backends.kubeauth", EXPIRY_MARGIN=datetime.timedelta(seconds=1))
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=3, exec_ttl=4) as h:
        assert h.sim is not None
        await h.ready(1)
        issued = h.sim.credentials.issued
        await asyncio.sleep(5)  # every token issued so far has expired
        claim = await h.claim("ann")  # a PATCH with a fresh token
        assert isinstance(claim, Claim)
        h.sim.evict("sd", claim.pod)  # the watch, on a fresh token too, sees it
        await h.until(lambda: _no_claim(h, "ann"), within=15, what="eviction seen")
        assert h.sim.credentials.issued > issued


async def _no_claim(h: Harness, user: str) -> bool:
    return await h.store.lookup(user) is None
