"""A pod's claim lock held by another broker is waited for off the event loop.

Before (issue 18): `mark_claimed` took `flock(LOCK_EX)` in the loop, so a lock held
by another broker stopped every request of this one until it was let go.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fleet.backends.local import LocalBackend
from tests.chaos.test_pod_labels import slow_spec

# Another broker: holds the claim file's lock until told to let go (or 20 s pass).
HOLDER = """
import fcntl, os, select, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
told, _, _ = select.select([sys.stdin], [], [], 20)
print("let go when told" if told else "let go after 20 s: nobody could tell it", flush=True)
"""


async def test_a_held_claim_lock_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path)
    backend = LocalBackend(spec, tmp_path / "data")
    await backend.start()
    rec = await backend.create(spec.profiles[0], "default-pod1")
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, backend._claim_path(rec.id),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"held\n"
        claim = asyncio.ensure_future(backend.mark_claimed(rec.id, "ann", "ann"))
        await asyncio.sleep(0.1)  # the claim has started and waits for the lock
        assert not claim.done()
        # This loop still runs: it tells the holder to let go.
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        assert await holder.stdout.readline() == b"let go when told\n"
        await claim
        seen = await backend.phase_of(rec.id)
        assert seen is not None and seen.user == "ann"
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
        await backend.delete(rec.id)
