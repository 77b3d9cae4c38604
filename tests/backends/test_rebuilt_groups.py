"""A claim rebuilt from its pod's record keeps its groups, on every backend (issue 19).

Redis is an index and the pods are the record (DESIGN.md): a group's max_sessions must
count a session after Redis lost it, or a failover lets a limited group run over its
limit. The claim's groups are written on the pod's record with the claim
(`Backend.mark_claimed`, the Agones allocation) and come back through restore.lua (a
flushed index) and reattach.lua (an older index restored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet import Claim, Limited, Rebuilding, keys
from fleet.model import (
    RECORD_GROUP_NAME,
    RECORD_GROUPS_BYTES,
    groups_of,
    record_groups,
    record_groups_of,
)
from tests.backends.harness import harness
from tests.backends.test_index_restore import backup, restore

BACKENDS = ["local", "kubernetes", "agones"]
LAB = "groups:\n  lab: {max_sessions: 1}\n"


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_flushed_index_still_counts_the_groups_session(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=2, max=4, top=LAB) as h:
        await h.ready(2)
        ann = await h.fleet.claim("ann", groups=("lab", "staff"))
        assert isinstance(ann, Claim)
        rec = await h.backend.phase_of(ann.pod)
        assert rec is not None and rec.groups == ("lab", "staff")  # on the pod's own record
        await h.store.redis.flushall()
        assert isinstance(await h.fleet.claim("bob", groups=("lab",)), Rebuilding)
        h.controller.wake()
        rebuilt = await h.until(lambda: h.store.lookup("ann"), what="ann's claim rebuilt")
        assert rebuilt.pod == ann.pod and rebuilt.groups == ("lab", "staff")
        assert await h.store.redis.smembers(keys.group_holders("lab")) == {"ann"}
        await h.ready(1)
        bob = await h.fleet.claim("bob", groups=("lab",))
        assert isinstance(bob, Limited), f"a second lab member got {bob}"
        cara = await h.fleet.claim("cara", groups=("other",))
        assert isinstance(cara, Claim)  # the limit holds lab only


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_reattached_claim_still_counts_the_groups_session(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    """An older index restored (a failover to a replica behind): the pass that re-attaches
    ann's pod from its record gives the claim its groups back (reattach.lua)."""
    async with harness(kind, redis_url, tmp_path, buffer=2, max=4, top=LAB) as h:
        await h.ready(2)
        saved = await backup(h.store.redis)
        ann = await h.fleet.claim("ann", groups=("lab",))
        assert isinstance(ann, Claim)
        await h.until(lambda: h._at_least("ready", 2), what="the buffer refilled")
        await restore(h.store.redis, saved)
        h.controller.wake()
        back = await h.until(lambda: _holds(h, "ann", ann.pod), what="ann's claim re-attached")
        assert back.groups == ("lab",)
        assert await h.store.redis.smembers(keys.group_holders("lab")) == {"ann"}
        bob = await h.fleet.claim("bob", groups=("lab",))
        assert isinstance(bob, Limited), f"a second lab member got {bob}"


async def _holds(h, user: str, pod: str) -> Claim | None:
    claim = await h.store.lookup(user)
    return claim if claim is not None and claim.pod == pod else None


def test_the_records_groups_are_bounded_and_checked_when_read() -> None:
    """A person in thousands of groups still fits an annotation, their limited group first;
    what comes back from a record is a list of short strings or nothing."""
    many = [f"group-{i:05d}" for i in range(5000)] + ["zz-limited"]
    text = record_groups(many, first=["zz-limited"])
    assert len(text.encode()) <= RECORD_GROUPS_BYTES
    kept = groups_of(text)
    assert "zz-limited" in kept and 100 < len(kept) < 5000
    assert record_groups(["a" * (RECORD_GROUP_NAME + 1), "b"]) == '["b"]'
    assert record_groups_of(text) == tuple(sorted(kept))
    assert record_groups_of('["' + "x" * RECORD_GROUPS_BYTES + '"]') == ()
    assert record_groups_of('{"lab": 1}') == () and record_groups_of("not json") == ()
    assert record_groups_of('["lab", 3, "", null, "lab"]') == ("lab",)
