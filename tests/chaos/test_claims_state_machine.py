"""A stateful property test of the two invariants, in-process against real Redis.

Claims, releases, reclaims, pod deaths, Redis flushes (also in the middle of a
claim) and broker restarts in any order; after every step: a user holds at
most one pod, a pod serves at most one user, and a pod id once served to one
user is never served to another, ever. A fake backend (tests/chaos/fake_backend.py)
keeps it fast: the real FleetStore, Lua, Fleet, Controller (both passes) and Router.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import aiohttp
import redis as sync_redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from broker.routing import Router
from fleet import Claim, Controller, Fleet, FleetStore, PodState, connect_redis, parse_spec
from tests.chaos.fake_backend import FakeBackend

USERS = st.sampled_from(["ann", "bob", "cy", "dee", "eve"])
SPEC = parse_spec(
    """\
backend: local
profiles:
  - name: default
    max: 6
    buffer: 2
    probe: http:/ready
    local:
      command: [fake, "{port}", "{pod}"]
"""
)


class ClaimsMachine(RuleBasedStateMachine):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.backend = FakeBackend(SPEC)
        self.served: dict[str, str] = {}  # pod -> the one user it was ever served to
        self.now = 0.0
        sync = sync_redis.Redis.from_url(url)
        sync.flushall()
        sync.close()
        self.run(self._start())
        self.run(self.controller.reconcile())  # first pass: index built, pods created
        self.run(self.controller.reconcile())  # second: they are ready

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        """A broker process: its own Redis client, store, fleet, controller and route cache."""
        self.redis = connect_redis(self.url)
        self.http = aiohttp.ClientSession()
        self.store = FleetStore(self.redis)
        self.fleet = Fleet(self.store, self.backend, SPEC, self.http)
        self.controller = Controller(self.store, self.backend, lambda: SPEC, self.http)
        self.router = Router(self.fleet, ttl=5.0, clock=lambda: self.now)

    async def _stop(self) -> None:
        await self.http.close()
        await self.redis.aclose()

    def teardown(self) -> None:
        self.run(self._stop())
        self.loop.close()

    def serve(self, user: str, claim: Claim) -> None:
        first = self.served.setdefault(claim.pod, user)
        assert first == user, f"pod {claim.pod} served to {user} after {first}"
        rec = self.backend.records.get(claim.pod)
        if rec is not None and rec.user:
            assert rec.user == user, f"{user} routed to {claim.pod}, labelled for {rec.user}"

    # --- rules ----------------------------------------------------------------

    @rule(user=USERS)
    def request(self, user: str) -> None:
        """A request from the user: route cache, else the Lua claim."""
        result = self.run(self.router.route(user))
        if isinstance(result, Claim):
            self.serve(user, result)

    @rule(user=USERS)
    def release(self, user: str) -> None:
        self.run(self.fleet.release(user, "admin"))
        self.router.forget(user)  # the release event every broker hears

    @rule(user=USERS)
    def reclaim_idle(self, user: str) -> None:
        """The reaper ends an idle session, guarded by the activity it saw."""
        claim = self.run(self.fleet.lookup(user))
        if claim is not None:
            self.run(self.store.end_pod(claim.pod, "idle", only_user=user, idle_since=1e12))
            self.router.forget(user)

    @rule(nth=st.integers(min_value=0, max_value=SPEC.profiles[0].max - 1))
    def pod_dies(self, nth: int) -> None:
        """The nth pod by creation dies. Pod ids are random and the fleet differs from
        run to run, so what is drawn must not depend on it: hypothesis replays a case
        by its draws, and a draw shaped by the fleet (a precondition, a sample of ids)
        makes the replay stop where the first run went on (FlakyStrategyDefinition)."""
        pods = list(self.backend.records)
        if pods:
            self.backend.kill(pods[nth % len(pods)])

    @rule()
    def reconcile(self) -> None:
        self.run(self.controller.reconcile())

    @rule()
    def rescale(self) -> None:
        """The light pass a claim, release or queue join brings."""
        self.run(self.controller.rescale())

    @rule()
    def time_passes(self) -> None:
        self.now += 6.0  # route caches expire

    @rule()
    def redis_flushed(self) -> None:
        self.run(self.redis.flushall())

    @rule(first=USERS, second=USERS)
    def redis_flushed_mid_claim(self, first: str, second: str) -> None:
        """FLUSHALL lands between the Lua claim and the label on the pod; the index is
        rebuilt and someone else claims before the first claim's label is written."""
        if first == second:
            return

        async def fault() -> None:
            await self.redis.flushall()
            await self.controller.reconcile()
            other = await self.router.route(second)
            if isinstance(other, Claim):
                self.serve(second, other)

        self.backend.before_mark = fault
        result = self.run(self.router.route(first))
        self.backend.before_mark = None
        if isinstance(result, Claim):
            self.serve(first, result)

    @rule()
    def broker_restart(self) -> None:
        """A broker dies and another starts: fresh clients, empty caches; pods stay."""
        self.run(self._stop())
        self.run(self._start())

    # --- invariants -----------------------------------------------------------

    @invariant()
    def one_pod_per_user_one_user_per_pod(self) -> None:
        pods = self.run(self.store.pods(["default"]))
        holders: dict[str, list[str]] = defaultdict(list)
        for pod in pods:
            if pod.state is PodState.CLAIMED:
                holders[pod.user].append(pod.id)
                first = self.served.get(pod.id)
                assert first in (None, pod.user), f"{pod.id} indexed for {pod.user}, served {first}"
        for user, held in holders.items():
            assert len(held) == 1, f"{user} holds {held}"
        for user in ("ann", "bob", "cy", "dee", "eve"):
            claim = self.run(self.fleet.lookup(user))
            if claim is not None:
                claimed_by = [u for u, held in holders.items() if claim.pod in held]
                assert claimed_by in ([], [user]), f"claim of {user} on {claim.pod} of {claimed_by}"
        for rec in self.backend.records.values():
            first = self.served.get(rec.id)
            assert not rec.user or first in (None, rec.user), f"{rec.id}: {rec.user} vs {first}"


def test_one_pod_per_user_one_user_per_pod_ever(redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: ClaimsMachine(redis_url),
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
