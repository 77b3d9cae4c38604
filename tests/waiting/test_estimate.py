"""The numbers behind the wait page and the admin chart: estimates by what a person waits for,
and the history series shared by replicas (one sample per interval, capped)."""

from __future__ import annotations

from fleet import History, Outlook, estimate, samples_kept
from fleet.forecast import Eta
from fleet.redis_client import connect_redis
from fleet.store import FleetStore

NOW = 1_000_000.0


def outlook(**kw: object) -> Outlook:
    base = dict(
        at=NOW, ready=0, warming_since=(), total=0, max=4, session_ends=(), typical_start=30.0
    )
    return Outlook(**{**base, **kw})  # type: ignore[arg-type]


def test_estimates_name_what_the_person_waits_for() -> None:
    # A Ready pod nobody took: now.
    assert estimate(outlook(ready=1, total=1), 1) == Eta(0.0, "ready")
    # Pods already starting: the typical start minus how long each has run, oldest first.
    starting = outlook(warming_since=(NOW - 20, NOW - 5), total=2)
    assert estimate(starting, 1) == Eta(10.0, "starting")
    assert estimate(starting, 2) == Eta(25.0, "starting")
    # Room below max: a pod the controller will start.
    assert estimate(starting, 3) == Eta(30.0, "starting")
    # At max: the earliest a session can end, then a start; past that, no honest number.
    full = outlook(total=2, max=2, session_ends=(NOW + 100, NOW + 400))
    assert estimate(full, 1) == Eta(130.0, "full")
    assert estimate(full, 2) == Eta(430.0, "full")
    assert estimate(full, 3) == Eta(None, "full")
    # No pod has started lately: no number rather than a made-up one.
    assert estimate(outlook(warming_since=(NOW,), total=1, typical_start=None), 1).seconds is None


async def test_history_keeps_one_sample_per_interval_across_replicas(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        store = FleetStore(redis)
        await redis.zadd("sdb:ready:default", {"p1": 1, "p2": 2})
        await redis.zadd("sdb:queue:default", {"ann": 1})
        replicas = [History(redis), History(redis)]
        assert await replicas[0].sample(["default"], NOW, 30) == 1
        assert await replicas[1].sample(["default"], NOW + 5, 30) == 0  # another replica did
        assert await replicas[1].sample(["default"], NOW + 30, 30) == 1
        series = await replicas[0].series("default")
        assert [(s.at, s.ready, s.queue, s.claimed) for s in series] == [
            (NOW, 2, 1, 0),
            (NOW + 30, 2, 1, 0),
        ]
        assert [s.at for s in await replicas[0].series("default", since=NOW + 1)] == [NOW + 30]
        for i in range(samples_kept(30) + 5):
            await replicas[0].sample(["default"], NOW + 60 + 30 * i, 30)
        assert len(await replicas[0].series("default")) == samples_kept(30)

        for seconds in [5.0, 100.0, 7.0, *([6.0] * 25)]:
            await replicas[0].note_start("default", seconds)
        starts = await replicas[1].recent_starts("default")
        assert len(starts) == 20 and 100.0 not in starts  # capped, newest kept
        assert await store.see_waiting("ann", "default") == (1, 1)
        assert await store.see_waiting("bob", "default") is None  # not in line: not added
    finally:
        await redis.aclose()
