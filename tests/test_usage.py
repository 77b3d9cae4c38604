"""Every GPU-minute attributed (issue 19 §3): the groups a claim was made with, and the
pod's node, reach the session's audit entry and its log lines, and usage per user and
per group is summed from them; against a real Redis server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from fleet import Claim, FleetStore, Phase, PodRecord, Tell, Usage, connect_redis, keys, read_usage
from tests.support.clock import StepClock

HOUR = 3600.0


class Clock(StepClock):
    """The store's clock, moved by the test; it starts a day back, so that the audit
    stream's ids (the Redis server's own clock) are never before the times it gives."""

    def __init__(self) -> None:
        super().__init__(time.time() - 24 * HOUR)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    store = FleetStore(redis, clock=Clock())
    await store.mark_built()
    yield store
    await redis.aclose()


async def ready_pod(store: FleetStore, pod_id: str, node: str) -> None:
    assert await store.add_pod(pod_id, "l4", 100)
    assert await store.mark_ready(pod_id, "l4", "http://127.0.0.1:20001", node)  # as the controller


async def take(store: FleetStore, user: str, groups: list[str]) -> Claim:
    claim = await store.claim(user, "l4", queue_grace=60, groups=groups)
    assert isinstance(claim, Claim) and claim.new
    assert await store.mark_bound(claim)
    return claim


def last_audit(entries: list[dict[str, str]], user: str) -> dict[str, str]:
    return next(e for e in entries if e.get("user") == user)


async def test_groups_and_node_reach_the_audit_entry_and_the_log_lines(
    store: FleetStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the claim kept no groups, and the audit entry had neither groups nor node,
    so GPU time could not be charged to a group or a node."""
    clock = store.clock
    assert isinstance(clock, Clock)
    await ready_pod(store, "l4-1", "gke-gpu-1")
    claim = await take(store, "ann", ["staff", "artists", "staff"])
    assert claim.groups == ("artists", "staff") and claim.node == "gke-gpu-1"
    looked = await store.lookup("ann")
    assert looked is not None and looked.groups == ("artists", "staff")
    assert json.loads(await store.redis.hget(keys.claim("ann"), "groups")) == ["artists", "staff"]

    clock.now += 600
    with caplog.at_level(logging.INFO, logger="fleet.store.pods"):
        ended = await store.end_pod("l4-1", "idle", tell=Tell("reaper"))
    assert ended is not None and ended.groups == ("artists", "staff")
    entry = last_audit(await store.recent_audit(), "ann")
    assert json.loads(entry["groups"]) == ["artists", "staff"]
    assert (entry["node"], entry["session_seconds"]) == ("gke-gpu-1", "600")
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "session_end"]
    assert line.__dict__["groups"] == ["artists", "staff"]
    assert line.__dict__["node"] == "gke-gpu-1"
    assert (line.__dict__["start"], line.__dict__["end"]) == (clock.now - 600, clock.now)

    # A claim whose pod record is gone ends through drop_claim.lua: attributed the same way.
    await ready_pod(store, "l4-2", "gke-gpu-2")
    await take(store, "bob", ["staff"])
    await store.redis.delete(keys.pod("l4-2"))
    assert await store.drop_claim("bob", "l4-2", reason="dead", tell=Tell("proxy")) == 1
    entry = last_audit(await store.recent_audit(), "bob")
    assert (entry["groups"], entry["node"]) == ('["staff"]', "")

    # A pod the platform allocated (Agones: bind.lua) keeps the groups the same way.
    rec = PodRecord("l4-3", "l4", Phase.READY, addr="http://127.0.0.1:20003")
    bound = await store.bind("eve", rec, ["ops"])
    assert isinstance(bound, Claim) and bound.groups == ("ops",)
    looked = await store.lookup("eve")
    assert looked is not None and looked.groups == ("ops",)


async def test_usage_per_user_and_per_group_over_a_window(store: FleetStore) -> None:
    """Ended sessions from the audit stream and running ones from the claims, each counted
    for its part inside the window; a group counts every session of its members."""
    clock = store.clock
    assert isinstance(clock, Clock)
    start = clock.now
    for pod_id, user, groups in (("l4-1", "ann", ["artists", "staff"]), ("l4-2", "bob", ["staff"]),
                                 ("l4-3", "cy", [])):  # fmt: skip
        await ready_pod(store, pod_id, "gke-gpu-1")
        await take(store, user, groups)
    clock.now += HOUR
    assert await store.end_pod("l4-1", "idle", tell=Tell("reaper"))  # ann: 1 h, ended
    clock.now += HOUR
    assert await store.end_pod("l4-3", "max_session", tell=Tell("reaper"))  # cy: 2 h, ended
    clock.now += HOUR  # bob: 3 h so far, running

    def table(rows: list[Usage]) -> dict[str, tuple[int, int, float]]:
        return {u.key: (u.sessions, u.running, u.seconds["l4"]) for u in rows}

    by_user = await read_usage(store, ["l4"], start, clock.now, "user")
    assert table(by_user) == {"bob": (1, 1, 3 * HOUR), "cy": (1, 0, 2 * HOUR), "ann": (1, 0, HOUR)}
    by_group = await read_usage(store, ["l4"], start, clock.now, "group")
    assert table(by_group) == {"staff": (2, 1, 4 * HOUR), "": (1, 0, 2 * HOUR),
                               "artists": (1, 0, HOUR)}  # fmt: skip
    # The last 90 minutes: ann ended before it, cy's last 30 minutes and bob's 90 are in it.
    late = await read_usage(store, ["l4"], clock.now - 1.5 * HOUR, clock.now, "user")
    assert table(late) == {"bob": (1, 1, 1.5 * HOUR), "cy": (1, 0, 0.5 * HOUR)}
