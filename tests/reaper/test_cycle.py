"""One reclaim cycle, in process: real Redis, real stub WebUIs, a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp

from fleet import Probe, keys, make_probe
from reaper import Reason, end_session

from .conftest import IDLE, HarnessFactory, reclaims, until


async def test_idle_session_is_reclaimed_audited_counted_and_noticed(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    claims = await h.sessions("ann")
    pod = claims["ann"].pod
    before = reclaims("idle")

    h.clock.advance(IDLE - 1)
    summary = await h.cycle().run()
    assert (summary.checked, summary.reclaimed) == (0, 0)
    assert summary.sessions == 1

    h.clock.advance(2)
    summary = await h.cycle().run()
    assert (summary.checked, summary.idle, summary.busy, summary.reclaimed) == (1, 1, 0, 1)
    assert summary.reasons == {"idle": 1}
    assert summary.ended == [
        {"user": "ann", "pod": pod, "reason": "idle", "idle_seconds": int(IDLE + 1)}
    ]
    assert await h.claim_of("ann") is None
    assert await h.pod_state(pod) == "deleting"  # the controller deletes it and refills
    assert pod in await h.store.deleting()
    [event] = await h.audit()
    assert event["user"] == "ann" and event["pod"] == pod and event["reason"] == "idle"
    assert int(event["idle_seconds"]) == int(IDLE + 1)
    assert reclaims("idle") == before + 1
    notice = json.loads(await h.redis.get(keys.ended("ann")))
    assert notice["reason"] == "idle" and notice["idle_seconds"] == int(IDLE + 1)

    again = await h.cycle().run()  # nothing left to do: no double reclaim
    assert (again.checked, again.reclaimed) == (0, 0)
    assert len(await h.audit()) == 1


async def test_recent_activity_keeps_a_session(harness: HarnessFactory) -> None:
    h = await harness()
    await h.sessions("ann", "bob")
    h.clock.advance(IDLE - 5)
    await h.store.touch({"ann": h.clock()})  # a broker flushed ann's activity
    h.clock.advance(10)
    summary = await h.cycle().run()
    assert [e["user"] for e in summary.ended] == ["bob"]
    assert await h.claim_of("ann") is not None


async def test_busy_pod_kept_while_generating_then_reclaimed(harness: HarnessFactory) -> None:
    h = await harness(delay=1.5)
    claim = (await h.sessions("ann"))["ann"]
    generation = asyncio.create_task(
        h.http.post(claim.addr + "/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 5})
    )
    probe = make_probe("a1111")
    await until(lambda: probe.busy(h.http, claim.addr))

    h.clock.advance(IDLE + 30)
    summary = await h.cycle().run()
    assert (summary.checked, summary.busy, summary.reclaimed) == (1, 1, 0)
    assert await h.claim_of("ann") is not None
    # Busy refreshes the activity: the session gets a full idle_timeout after the work.
    assert await h.redis.zscore(keys.ACTIVITY, "ann") == h.clock()

    async with await generation as resp:
        assert resp.status == 200  # finished on the pod it started on
        assert (await resp.json())["images"]
    h.clock.advance(1)  # the next cycle sees the generation has ended
    summary = await h.cycle().run()
    assert (summary.checked, summary.finished, summary.reclaimed) == (1, 1, 0)
    ended_at = h.clock()
    h.clock.advance(IDLE - 1)
    assert (await h.cycle().run()).checked == 0
    h.clock.advance(2)
    summary = await h.cycle().run()
    assert summary.ended[0]["user"] == "ann" and summary.reasons == {"idle": 1}
    assert summary.ended[0]["idle_seconds"] == int(h.clock() - ended_at)


async def test_idle_time_counts_from_the_end_of_a_generation_longer_than_idle_timeout(
    harness: HarnessFactory,
) -> None:
    """Issue 17 item 9: a busy session was probed only once per idle_timeout, so a long
    job that ended just before the next look was reclaimed seconds after it ended."""
    h = await harness(delay=4.0)
    claim = (await h.sessions("ann"))["ann"]
    generation = asyncio.create_task(
        h.http.post(claim.addr + "/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 4})
    )
    probe = make_probe("a1111")
    await until(lambda: probe.busy(h.http, claim.addr))
    h.clock.advance(IDLE + 1)  # the user's last request was the one that started the job
    assert (await h.cycle().run()).busy == 1
    h.clock.advance(IDLE - 10)  # the job goes on: longer than idle_timeout in all
    summary = await h.cycle().run()
    assert (summary.busy, summary.reclaimed) == (1, 0)  # looked at although not idle
    async with await generation as resp:
        assert resp.status == 200
    h.clock.advance(5)  # the job has ended; the next cycle sees it
    summary = await h.cycle().run()
    assert (summary.finished, summary.reclaimed) == (1, 0)
    ended_at = h.clock()
    assert await h.redis.zscore(keys.ACTIVITY, "ann") == ended_at
    assert not await h.redis.hexists(keys.BUSY, "ann")

    h.clock.advance(IDLE - 5)  # past idle_timeout after the job's first look, not after its end
    summary = await h.cycle().run()
    assert (summary.checked, summary.reclaimed) == (0, 0)
    assert await h.claim_of("ann") is not None
    h.clock.advance(10)
    summary = await h.cycle().run()
    assert summary.reasons == {"idle": 1}
    notice = json.loads(await h.redis.get(keys.ended("ann")))
    assert notice["idle_seconds"] == int(h.clock() - ended_at)


async def test_a_busy_entry_of_an_ended_session_is_forgotten(harness: HarnessFactory) -> None:
    """The busy hash never outlives the session it names, nor probes someone's next pod."""
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    await h.redis.hset(keys.BUSY, mapping={"ann": claim.pod, "gone": "default-gone"})
    summary = await h.cycle().run()
    assert (summary.checked, summary.finished, summary.reclaimed) == (2, 1, 0)
    assert await h.redis.hlen(keys.BUSY) == 0
    assert await h.claim_of("ann") is not None


async def test_max_session_ends_an_active_session(harness: HarnessFactory) -> None:
    h = await harness(max_session="100s")
    claims = await h.sessions("ann", "bob")
    for _ in range(3):
        h.clock.advance(40)
        await h.store.touch({"ann": h.clock(), "bob": h.clock()})
    h.clock.advance(10)  # 130 s after the claim, 10 s after the last activity
    before = reclaims("max_session")
    summary = await h.cycle().run()
    assert summary.reasons == {"max_session": 2}
    assert {e["pod"] for e in summary.ended} == {c.pod for c in claims.values()}
    assert reclaims("max_session") == before + 2
    assert {e["reason"] for e in await h.audit()} == {"max_session"}
    notice = json.loads(await h.redis.get(keys.ended("ann")))
    assert notice["reason"] == "max_session" and notice["session_seconds"] == 130
    assert notice["limit_seconds"] == 100


async def test_dead_pod_is_cleaned_at_once(harness: HarnessFactory) -> None:
    """The backend says the process is gone: dead now, idle or not."""
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    record = json.loads((h.data_dir / "pods" / f"{claim.pod}.json").read_text())
    os.killpg(os.getpgid(record["pid"]), signal.SIGKILL)

    async def gone() -> bool:
        return not h.backend._alive(record)

    await until(gone)
    before = reclaims("dead")
    summary = await h.cycle().run()
    assert summary.reasons == {"dead": 1} and summary.reclaimed == 1
    assert await h.claim_of("ann") is None
    assert await h.pod_state(claim.pod) == "deleting"
    assert reclaims("dead") == before + 1
    [event] = await h.audit()
    assert event["reason"] == "dead" and "exited" in event["detail"]


async def test_unanswered_probe_counts_as_busy_for_a_few_cycles(
    harness: HarnessFactory,
) -> None:
    """Without a backend to ask, a silent pod is kept for `missed_probes` cycles, then dead."""
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    await h.redis.hset(keys.pod(claim.pod), "addr", "http://127.0.0.1:9")  # nothing listens
    h.clock.advance(IDLE + 1)
    for strike in (1, 2, 3):
        summary = await h.cycle(backend=None, missed_probes=3).run()
        assert (summary.unreachable, summary.reclaimed, summary.errors) == (1, 0, 0)
        assert await h.redis.hget(keys.pod(claim.pod), "reap_strikes") == str(strike)
        h.clock.advance(30)
    summary = await h.cycle(backend=None, missed_probes=3).run()
    assert summary.reasons == {"dead": 1}
    assert "no answer to 4 busy probes" in (await h.audit())[0]["detail"]


async def test_an_answer_resets_the_missed_probes(harness: HarnessFactory) -> None:
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    await h.redis.hset(keys.pod(claim.pod), "reap_strikes", "2")
    probe = make_probe("a1111")

    class Busy(Probe):
        async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
            return await probe.busy(http, addr) or True

    h.clock.advance(IDLE + 1)
    summary = await h.cycle(probe_for=lambda kind: Busy("/")).run()
    assert summary.busy == 1
    assert await h.redis.hget(keys.pod(claim.pod), "reap_strikes") is None


async def test_claim_whose_pod_no_longer_exists(harness: HarnessFactory) -> None:
    h = await harness()
    await h.store.mark_built()
    now = h.clock()
    await h.redis.hset(keys.claim("ghost"), mapping={"pod": "default-gone", "profile": "default"})
    await h.redis.zadd(keys.ACTIVITY, {"ghost": now - IDLE - 1, "stray": now - IDLE - 1})
    summary = await h.cycle().run()
    assert summary.reasons == {"dead": 1}
    assert not await h.redis.exists(keys.claim("ghost"))
    assert await h.redis.zscore(keys.ACTIVITY, "ghost") is None
    assert await h.redis.zscore(keys.ACTIVITY, "stray") is None  # tidied, not a reclaim
    assert [e["user"] for e in await h.audit()] == ["ghost"]


async def test_two_concurrent_cycles_reclaim_each_session_once(harness: HarnessFactory) -> None:
    h = await harness()
    users = ["ann", "bob", "cat", "dan"]
    await h.sessions(*users)
    real = make_probe("a1111")
    both_looked = asyncio.Barrier(2 * len(users))

    class Together(Probe):
        """Every probe of both cycles waits for the others: both have read all candidates."""

        async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
            await both_looked.wait()
            return await real.busy(http, addr)

    h.clock.advance(IDLE + 1)
    before = reclaims("idle")
    first, second = await asyncio.gather(
        h.cycle(probe_for=lambda kind: Together("/")).run(),
        h.cycle(store=h.second_store(), backend=None, probe_for=lambda kind: Together("/")).run(),
    )
    assert first.idle == second.idle == 4  # both saw every session idle...
    assert first.reclaimed + second.reclaimed == 4  # ...and each ended once
    ended = sorted(e["user"] for e in first.ended + second.ended)
    assert ended == users
    assert sorted(e["user"] for e in await h.audit()) == users
    assert reclaims("idle") == before + 4


async def test_one_failing_probe_does_not_stop_the_cycle(harness: HarnessFactory) -> None:
    h = await harness()
    claims = await h.sessions("ann", "bob", "cat")
    bad = claims["bob"].addr
    real = make_probe("a1111")

    class Flaky(Probe):
        async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
            if addr == bad:
                raise RuntimeError("probe bug")
            return await real.busy(http, addr)

    h.clock.advance(IDLE + 1)
    summary = await h.cycle(probe_for=lambda kind: Flaky("/")).run()
    assert summary.errors == 1 and summary.unreachable == 1
    assert sorted(e["user"] for e in summary.ended) == ["ann", "cat"]
    assert await h.claim_of("bob") is not None


async def test_activity_written_while_probing_cancels_the_reclaim(
    harness: HarnessFactory,
) -> None:
    """A broker flushes activity it saw before the cycle looked: end_pod's guard sees it."""
    h = await harness()
    await h.sessions("ann")
    real = make_probe("a1111")
    h.clock.advance(IDLE + 1)

    class Returning(Probe):
        async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
            await h.store.touch({"ann": h.clock() - 2})
            return await real.busy(http, addr)

    summary = await h.cycle(probe_for=lambda kind: Returning("/")).run()
    assert summary.idle == 1 and summary.reclaimed == 0
    assert await h.claim_of("ann") is not None
    assert await h.audit() == []


async def test_settle_waits_for_late_activity_before_ending(harness: HarnessFactory) -> None:
    h = await harness()
    await h.sessions("ann")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    h.clock.advance(IDLE + 1)
    summary = await h.cycle(settle=5.0, sleep=sleep).run()
    assert summary.reclaimed == 1
    assert len(waits) == 1 and 0.0 < waits[0] <= 5.0  # settle, less the time already spent


async def test_dry_run_reports_and_changes_nothing(harness: HarnessFactory) -> None:
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    h.clock.advance(IDLE + 1)
    summary = await h.cycle().run(dry_run=True)
    assert summary.dry_run and summary.reclaimed == 0 and summary.idle == 1
    assert summary.ended == [
        {"user": "ann", "pod": claim.pod, "reason": str(Reason.IDLE), "idle_seconds": 61}
    ]
    assert await h.claim_of("ann") is not None
    assert await h.audit() == []


async def test_admin_end_session_is_audited_like_a_reclaim(harness: HarnessFactory) -> None:
    h = await harness()
    claim = (await h.sessions("ann"))["ann"]
    before = reclaims("admin")
    assert await end_session(h.store, "ann")
    assert not await end_session(h.store, "ann")  # once
    assert await h.pod_state(claim.pod) == "deleting"
    [event] = await h.audit()
    assert event["reason"] == "admin" and event["pod"] == claim.pod
    assert reclaims("admin") == before + 1
    assert json.loads(await h.redis.get(keys.ended("ann")))["reason"] == "admin"
