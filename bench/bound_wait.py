"""Claim to bound: how long a second broker's request waits after the first broker binds.

Broker A claims a pod for a user and binds it (its record, the WebUI's outputs
folder) while broker B's request for the same user waits (`Fleet._when_bound`).
Measured: from A's `mark_bound` returning to B's request going on, and the
Redis reads B made meanwhile. Side by side in one run, on one real Redis:
- poll 20 ms: no listener, B looks every 20 ms (what issue 18 replaced);
- bound event: B's listener hears bound.lua's `bound` event (the fallback look
  is 1 s, only for a lost message).

    .venv/bin/python bench/bound_wait.py [--reps 30] [--hold 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

if __package__ in (None, ""):  # run as `python bench/bound_wait.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import RedisServer
from fleet import Claim, Controller, Fleet, FleetStore, connect_redis, service
from fleet.listener import listen
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC


class Timed(FleetStore):
    """Counts lookups; remembers when the last mark_bound returned."""

    lookups = 0
    bound_at = 0.0

    async def lookup(self, user: str) -> Claim | None:
        self.lookups += 1
        return await super().lookup(user)

    async def mark_bound(self, claim: Claim) -> bool:
        done = await super().mark_bound(claim)
        self.bound_at = time.perf_counter()
        return done


async def one_mode(url: str, *, events: bool, reps: int, hold: float) -> tuple[list[float], int]:
    """(seconds from bound to B going on, B's lookups) over `reps` users."""
    service.BIND_FALLBACK = 1.0 if events else 0.02
    redis = connect_redis(url)
    await redis.flushall()
    backend = FakeBackend(SPEC)
    store_a, store_b = Timed(redis), Timed(redis)
    waits: list[float] = []
    async with aiohttp.ClientSession() as http:
        controller = Controller(store_a, backend, lambda: SPEC, http)
        a, b = Fleet(store_a, backend, SPEC, http), Fleet(store_b, backend, SPEC, http)
        listener = asyncio.create_task(listen(redis, [b.on_event])) if events else None
        for i in range(reps):
            await controller.reconcile()  # the last user's pod deleted, a Ready one for this
            await controller.reconcile()
            release = asyncio.Event()
            marking = asyncio.Event()

            async def slow_binding(release: asyncio.Event = release, marking=marking) -> None:
                marking.set()
                await release.wait()

            backend.before_mark = slow_binding
            first = asyncio.create_task(a.claim(f"user{i}"))
            await marking.wait()
            second = asyncio.create_task(b.claim(f"user{i}"))
            await asyncio.sleep(hold)
            release.set()
            await first
            await second
            waits.append(time.perf_counter() - store_a.bound_at)
            await a.release(f"user{i}", "bench")  # under the profile's max for the next one
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    await redis.aclose()
    return waits, store_b.lookups


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


async def main(reps: int, hold: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            rows = {}
            for name, events in (("poll 20 ms", False), ("bound event", True)):
                rows[name] = await one_mode(server.url, events=events, reps=reps, hold=hold)
        finally:
            server.stop()
    print(f"claim to bound, {reps} users, binding held {hold * 1000:.0f} ms each")
    print(f"{'':14} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'B lookups/user':>15}")
    for name, (waits, lookups) in rows.items():
        print(f"{name:14} {statistics.median(waits) * 1000:10.1f} {ms(waits, 0.9):>8} "
              f"{max(waits) * 1000:8.1f} {lookups / reps:15.1f}")  # fmt: skip
    poll, event = (statistics.median(rows[n][0]) for n in rows)
    print(f"median wait after bound: {poll / event:.1f}x shorter with the event")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--hold", type=float, default=0.2, help="seconds A takes to bind")
    args = parser.parse_args()
    asyncio.run(main(args.reps, args.hold))
