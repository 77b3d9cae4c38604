"""The durable record on a pod is written once: a pod labelled for one user refuses another.

This is what keeps "one user per pod, ever" when Redis is flushed between the
Lua claim and the label (see redis_flushed_mid_claim in
test_claims_state_machine.py): the index is rebuilt without the claim, the pod
is offered again, and only the label can still say no.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fleet import Conflict, parse_spec
from fleet.backends.local import LocalBackend
from tests.chaos.support import SLOW_UPSTREAM


async def test_local_pod_claimed_for_one_user_refuses_another(tmp_path: Path) -> None:
    spec = parse_spec(
        f"""backend: local
outputs: {tmp_path / "out"}
profiles:
  - name: default
    max: 1
    probe: http:/ready
    local:
      command: [{sys.executable}, {SLOW_UPSTREAM}, --port, "{{port}}", --pod-id, "{{pod}}"]
      stop_grace: 1s
"""
    )
    backend = LocalBackend(spec, tmp_path / "data")
    await backend.start()
    rec = await backend.create(spec.profiles[0], "default-pod1")
    try:
        await backend.mark_claimed(rec.id, "ann", "ann")
        await backend.mark_claimed(rec.id, "ann", "ann")  # the same user again is fine
        with pytest.raises(Conflict):
            await backend.mark_claimed(rec.id, "bob", "bob")
        assert (await backend.phase_of(rec.id)).user == "ann"
    finally:
        await backend.delete(rec.id)
