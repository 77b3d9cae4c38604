"""reclaim_when_gone in real reclaim cycles: a real Redis, real stub WebUIs, the
presence trackers of two broker processes, and a FakeClock so minutes pass at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.presence import PresenceTracker
from fleet import FleetSpec, keys, parse_spec
from tests.support.procs import STUB

from .conftest import SPEC, Harness

BEAT = 10.0  # the trackers' beat interval: their counts expire 31 s after a beat


@pytest.fixture
def gone_spec(tmp_path: Path) -> FleetSpec:
    text = SPEC.format(
        idle="15m", max_session="null", outputs=tmp_path / "out", stub=STUB, delay=0.2
    ).replace("    probe: a1111\n", "    probe: a1111\n    reclaim_when_gone: 2m\n")
    return parse_spec(text)


@pytest.fixture
async def gone_harness(
    redis_url: str, tmp_path: Path, gone_spec: FleetSpec
) -> AsyncIterator[Harness]:
    h = Harness(redis_url, gone_spec, tmp_path / "data")
    await h.start()
    yield h
    await h.close()


async def test_the_last_tab_on_any_process_decides_and_a_silent_process_lapses(
    gone_harness: Harness,
) -> None:
    h = gone_harness
    await h.sessions("ann", "bob")
    a = PresenceTracker(h.store, interval=BEAT, clock=h.clock)
    b = PresenceTracker(h.second_store(), interval=BEAT, clock=h.clock)
    a.opened("ann")
    a.opened("bob")
    await a.beat()
    h.clock.advance(180)  # 3 minutes without activity, tabs open: kept
    await a.beat()
    summary = await h.cycle().run()
    assert summary.reclaimed == 0 and await h.store.tabs_open("ann") == 1

    b.opened("ann")  # ann's second tab, on another process; then both close on A
    a.closed("ann")
    a.closed("bob")
    await a.beat()
    await b.beat()
    assert await h.store.tabs_open("ann") == 1 and await h.store.tabs_open("bob") == 0
    h.clock.advance(100)  # within reclaim_when_gone: nobody ends
    await a.beat()
    await b.beat()
    assert (await h.cycle().run()).reclaimed == 0
    h.clock.advance(30)
    await a.beat()
    await b.beat()
    summary = await h.cycle().run()
    assert [e["user"] for e in summary.ended] == ["bob"] and summary.reasons == {"gone": 1}
    assert await h.claim_of("ann") is not None

    # B is killed with ann's tab open: it beats no more; once its counts expire she is
    # gone from then, and reclaim_when_gone later her session ends.
    h.clock.advance(BEAT * 3 + 2)
    await a.beat()
    assert (await h.cycle().run()).reclaimed == 0
    assert await h.store.tabs_open("ann") == 0
    assert not await h.redis.exists(keys.presence(b.process))  # swept by that cycle
    h.clock.advance(121)
    summary = await h.cycle().run()
    assert [e["user"] for e in summary.ended] == ["ann"] and summary.reasons == {"gone": 1}
    assert [e["reason"] for e in await h.audit()] == ["gone", "gone"]


async def test_activity_after_the_last_tab_closed_keeps_the_session(
    gone_harness: Harness,
) -> None:
    """A script, or a tab the broker cannot see: only the idle timeout may end it."""
    h = gone_harness
    await h.sessions("cat")
    a = PresenceTracker(h.store, interval=BEAT, clock=h.clock)
    with a.tab("cat"):
        await a.beat()
    await a.beat()
    h.clock.advance(100)
    await h.store.touch({"cat": h.clock()})
    h.clock.advance(100)  # the tab closed 200 s ago, the last activity was 100 s ago
    await a.beat()
    assert (await h.cycle().run()).reclaimed == 0
    h.clock.advance(30)
    await a.beat()
    summary = await h.cycle().run()
    assert summary.reasons == {"gone": 1}


async def test_a_tab_closed_before_the_session_began_counts_for_nothing(
    gone_harness: Harness,
) -> None:
    """The home page closed, then a new WebUI used without a tab the broker sees (an API
    client): the old close is no reason to end the new session."""
    h = gone_harness
    a = PresenceTracker(h.store, interval=BEAT, clock=h.clock)
    with a.tab("dan"):
        await a.beat()
    await a.beat()
    h.clock.advance(10)
    await h.sessions("dan")
    h.clock.advance(300)
    await a.beat()
    assert (await h.cycle().run()).reclaimed == 0
    assert await h.claim_of("dan") is not None
    assert await h.redis.zscore(keys.GONE, "dan") is None  # dropped by that cycle
