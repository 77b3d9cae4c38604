"""Redis restored from an older backup, on every backend: the pods' records win.

The backup is taken with two Ready pods and no claim; alice then claims one. After
the restore the index says her pod is Ready again. Bob's claim must not take it, or
end it; alice keeps it (issue 17, item 5; fleet/reconcile.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from fleet import Claim, Phase, keys
from tests.backends.harness import harness

BACKENDS = ["local", "kubernetes", "agones"]


async def backup(redis: Redis) -> dict[str, bytes]:
    return {key: await redis.dump(key) for key in await redis.keys(keys.PREFIX + "*")}


async def restore(redis: Redis, saved: dict[str, bytes]) -> None:
    """What loading an older RDB leaves: exactly the keys of then (leader lock included)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.flushdb()
        for key, value in saved.items():
            pipe.restore(key, 0, value, replace=True)
        await pipe.execute()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_older_index_never_gives_a_claimed_pod_away(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    async with harness(kind, redis_url, tmp_path, buffer=2, max=5) as h:
        await h.ready(2)
        saved = await backup(h.store.redis)
        alice = await h.claim("alice")
        assert isinstance(alice, Claim)
        await h.until(lambda: h._at_least("ready", 2), what="the buffer refilled")
        await restore(h.store.redis, saved)

        bob = await h.until(lambda: _claimed(h, "bob"), what="bob's pod")
        assert bob.pod != alice.pod, "bob was given alice's pod"
        await h.until(lambda: _holds(h, "alice", alice.pod), what="alice's claim back in the index")
        rec = await h.backend.phase_of(alice.pod)
        assert (
            rec is not None and rec.user == "alice" and rec.phase not in (Phase.GONE, Phase.FAILED)
        )
        assert (await h.whoami(alice))["pod"] == alice.pod  # her WebUI, still running
        assert (await h.fleet.claim("alice")).pod == alice.pod  # type: ignore[union-attr]


async def _claimed(h, user: str) -> Claim | None:
    got = await h.claim(user)
    return got if isinstance(got, Claim) else None


async def _holds(h, user: str, pod: str) -> bool:
    claim = await h.store.lookup(user)
    return claim is not None and claim.pod == pod
