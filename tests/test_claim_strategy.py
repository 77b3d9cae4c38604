"""Each backend brings its claim strategy: Fleet.claim asks it, with no backend flag between.

Issue 18 item 5: `Fleet.claim` chose one of two algorithms by `backend.allocates`,
so a third way of claiming meant another branch in fleet/service.py.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from fleet import Claim, Fleet, FleetStore, Retry, Waiting, connect_redis, parse_spec
from fleet.backends.agones import AgonesBackend
from fleet.backends.local import LocalBackend
from fleet.claiming import ALLOCATE, TAKE_READY
from tests.support.procs import STUB

from .reaper.conftest import SPEC


class Recording:
    """A claim strategy that only notes what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, bool, bool, tuple[str, ...]]] = []

    async def claim(
        self, fleet: Fleet, user: str, name: str, join_queue: bool, unless_ended: bool,
        started: float, groups: tuple[str, ...] = (),
    ) -> Claim | Waiting:  # fmt: skip
        self.asked.append((user, name, join_queue, unless_ended, groups))
        return Retry(name)


class RecordingBackend(LocalBackend):
    claim_strategy = Recording()


def test_the_shipped_backends_bring_their_own_strategy() -> None:
    assert LocalBackend.claim_strategy is TAKE_READY
    assert AgonesBackend.claim_strategy is ALLOCATE


async def test_fleet_claims_with_the_backends_strategy(redis_url: str, tmp_path: Path) -> None:
    text = SPEC.format(idle=60, max_session="null", outputs=tmp_path / "out", stub=STUB, delay=0)
    spec = parse_spec(text)
    backend = RecordingBackend(spec, tmp_path / "data")
    redis = connect_redis(redis_url)
    try:
        async with aiohttp.ClientSession() as http:
            fleet = Fleet(FleetStore(redis), backend, spec, http)
            outcome = await fleet.claim("ann", unless_ended=True, groups=["artists"])
        assert outcome == Retry("default")
        asked = [("ann", "default", True, True, ("artists",))]
        assert RecordingBackend.claim_strategy.asked == asked
    finally:
        await redis.aclose()
