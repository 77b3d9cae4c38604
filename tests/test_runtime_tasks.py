"""The runtime's background work (issue 18, item 2): one way to run it (fleet.Tasks), with
backoff after failures and an ordered stop that awaits work in flight; the Router's
tasks awaited on close.

Before: periodic work ran under APScheduler, whose failures were logged and retried
at the same pace forever, and whose `shutdown(wait=False)` left a run in flight; the
Router's background lookups and claims were never tracked, so a shutdown left them
to be destroyed pending.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from broker.routing import Router
from fleet import Claim, Tasks


async def test_a_failing_periodic_task_backs_off_then_recovers() -> None:
    """Each failure in a row doubles the wait (here without jitter); a success resets it."""
    tasks = Tasks(rand=lambda: 1.0)
    calls = 0
    seen: list[tuple[int, float]] = []
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            health = tasks.health["flaky"]
            seen.append((health.failures_in_row, health.retry_in))
        if calls <= 4:
            raise ValueError("not yet")
        recovered.set()

    tasks.every("flaky", 0.01, flaky)
    await asyncio.wait_for(recovered.wait(), 10)
    await tasks.stop()
    assert seen == [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.08)]
    health = tasks.health["flaky"]
    assert (health.failures_in_row, health.retry_in, health.last_error) == (0, 0.0, "ValueError")
    assert health.last_success is not None and not health.running


async def test_stop_cancels_loops_and_lets_a_periodic_run_in_flight_finish() -> None:
    tasks = Tasks()
    started, finished, loop_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            loop_cancelled.set()
            raise

    async def flush() -> None:
        started.set()
        await asyncio.sleep(0.2)  # a flush in flight when stop is asked
        finished.set()

    tasks.start("loop", loop)
    tasks.every("flush", 0.01, flush)
    await asyncio.wait_for(started.wait(), 10)
    await tasks.stop()
    assert loop_cancelled.is_set() and finished.is_set()


class SlowFleet:
    """A Fleet stand-in whose lookups and claims wait to be let through."""

    def __init__(self) -> None:
        self.let_lookup, self.let_claim = asyncio.Event(), asyncio.Event()
        self.lookups_cancelled = 0

    async def lookup(self, user: str) -> Claim | None:
        try:
            await self.let_lookup.wait()
        except asyncio.CancelledError:
            self.lookups_cancelled += 1
            raise
        return claim_of(user)

    async def claim(
        self, user: str, profile: str | None, *, unless_ended: bool, groups: tuple[str, ...] = ()
    ) -> Claim:
        await self.let_claim.wait()
        return claim_of(user)


def claim_of(user: str) -> Claim:
    return Claim(user=user, pod=f"pod-{user}", profile="default", addr="127.0.0.1:1", since=0.0)


def test_router_close_awaits_its_tasks(caplog: pytest.LogCaptureFixture) -> None:
    """A claim in flight finishes; a lookup that outlasts close's bound is cancelled and
    awaited. Nothing is left for the loop to destroy pending."""
    errors: list[dict] = []

    async def main() -> tuple[Router, SlowFleet, asyncio.Task[object]]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        now = [0.0]
        fleet = SlowFleet()
        router = Router(fleet, ttl=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
        fleet.let_claim.set()
        assert (await router.route("ann")).pod == "pod-ann"  # type: ignore[union-attr]
        fleet.let_claim.clear()
        now[0] = 5.0  # ann's route is past its TTL: the next hit starts a background lookup
        assert router.cached("ann") is not None
        bob = asyncio.ensure_future(router.route("bob"))  # bob's claim is in flight
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.05, fleet.let_claim.set)
        await router.close(timeout=0.5)
        return router, fleet, bob

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        router, fleet, bob = asyncio.run(main())
    assert bob.done() and bob.result().pod == "pod-bob"  # type: ignore[union-attr]
    assert fleet.lookups_cancelled == 1
    assert not router._tasks
    assert errors == [] and "destroyed but it is pending" not in caplog.text
