"""max_session is a hard cap (issue 19, section 3): real Redis, real stub WebUIs, a fake clock.

A busy WebUI is never reclaimed as idle, and the busy answer comes from code
its user controls; so past max_session a session ends whatever the WebUI says.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fleet import Claim, FleetSpec, Probe, keys, make_probe, parse_spec
from tests.support.procs import STUB

from .conftest import Harness, HarnessFactory, reclaims, until

TWO_PROFILES = """\
backend: local
idle_timeout: 60
max_session: 100s
outputs: {outputs}
profiles:
  - name: short
    max: 2
    buffer: 0
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}"]
      stop_grace: 1s
  - name: long
    max: 2
    buffer: 0
    max_session: 1h
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}"]
      stop_grace: 1s
"""


async def test_a_generating_session_past_max_session_is_ended(harness: HarnessFactory) -> None:
    """Today's hole: the busy probe kept a session past max_session for as long as its
    WebUI said "busy". Now it ends, and the notice names the limit it reached."""
    h = await harness(max_session="100s", delay=30)
    claim = (await h.sessions("ann"))["ann"]
    generation = asyncio.create_task(
        h.http.post(claim.addr + "/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 5})
    )
    try:
        probe = make_probe("a1111")
        await until(lambda: probe.busy(h.http, claim.addr))
        h.clock.advance(101)
        await h.store.touch({"ann": h.clock()})  # active too: nothing but the cap can end it
        before = reclaims("max_session")
        summary = await h.cycle().run()
        assert await probe.busy(h.http, claim.addr)  # still generating when it was ended
    finally:
        generation.cancel()
    assert summary.reasons == {"max_session": 1}, summary
    assert await h.claim_of("ann") is None
    assert reclaims("max_session") == before + 1
    notice = json.loads(await h.redis.get(keys.ended("ann")))
    assert (notice["reason"], notice["limit_seconds"]) == ("max_session", 100)


async def test_a_webui_that_never_answers_cannot_hold_a_session_past_max_session(
    harness: HarnessFactory,
) -> None:
    """An idle, expired session whose probe hangs (its user's code can do that) ends at
    once as max_session, not after several unanswered cycles."""
    h = await harness(max_session="100s")
    await h.sessions("ann")

    class Hangs:
        async def ready(self, http: aiohttp.ClientSession, addr: str) -> bool:
            return True

        async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
            await asyncio.sleep(60)
            return True

    def hangs(kind: str) -> Probe:
        return Hangs()  # type: ignore[return-value]

    h.clock.advance(200)  # past idle_timeout (60 s) and max_session
    summary = await h.cycle(probe_for=hangs, probe_timeout=0.2, backend=None).run()
    assert summary.reasons == {"max_session": 1}, summary
    assert await h.claim_of("ann") is None


@pytest.fixture
async def two_profiles(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    spec = parse_spec(TWO_PROFILES.format(outputs=tmp_path / "out", stub=STUB))
    h = Harness(redis_url, spec, tmp_path / "data")
    await h.start()
    yield h
    await h.close()


async def _claim(h: Harness, spec: FleetSpec, profile: str, user: str) -> Claim:
    """Start a stub pod of `profile`, offer it as Ready and let `user` claim it."""
    p = spec.profile(profile)
    pod_id = f"{profile}-{secrets.token_hex(4)}"
    assert await h.store.add_pod(pod_id, p.name, p.max)
    rec = await h.backend.create(p, pod_id)
    await h.store.set_pod_fields(pod_id, addr=rec.addr)
    await until(lambda: make_probe("a1111").ready(h.http, rec.addr), 30)
    assert await h.store.mark_ready(pod_id, p.name, rec.addr)
    await h.store.set_choice(user, profile, 3600)
    claim = await h.fleet.claim(user)
    assert isinstance(claim, Claim) and claim.profile == profile, claim
    return claim


async def test_each_profile_has_its_own_max_session(two_profiles: Harness) -> None:
    """`long` sets 1h over the file's 100s: only the `short` session ends at 101 s."""
    h = two_profiles
    await _claim(h, h.spec, "short", "ann")
    await _claim(h, h.spec, "long", "bob")
    h.clock.advance(101)
    await h.store.touch({"ann": h.clock(), "bob": h.clock()})
    summary = await h.cycle().run()
    assert [(e["user"], e["reason"]) for e in summary.ended] == [("ann", "max_session")]
    assert await h.claim_of("bob") is not None
    h.clock.advance(3600)
    await h.store.touch({"bob": h.clock()})
    summary = await h.cycle().run()
    assert [(e["user"], e["reason"]) for e in summary.ended] == [("bob", "max_session")]
    notice = json.loads(await h.redis.get(keys.ended("bob")))
    assert notice["limit_seconds"] == 3600
