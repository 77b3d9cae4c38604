"""Keeps every profile at min/buffer/max and the Redis index true to the backend.

One controller leads at a time (a Redis leader lock), so N broker replicas
never start the same pod twice. A full pass is one `reconcile`:

1. adopt pods the index lacks (broker restart, or Redis lost its data);
2. end pods that died or failed, and claims whose pod is gone;
3. probe starting pods and offer the ready ones;
4. delete what is marked for deletion;
5. create or retire pods toward the target of each profile.

It reads every pod (O(pods)), so it runs on a tick (`interval`, faster while
pods warm) and on `wake()` (a platform event, a new spec, a schedule firing),
never less than MIN_FULL_GAP after the last one. A claim, release or queue
join only needs steps 4 and 5 (`rescale`: a few Redis commands per profile):
those events call `scale_soon()`, and a burst of them is gathered into one
such light pass per SCALE_GAP (a full pass per claim event kept the leader
reconciling through a whole claim burst at a few hundred pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from . import heartbeats, keys, start_health
from .aiotasks import raise_if_cancelled
from .allocations import check_allocations
from .backends.base import Backend
from .errors import BackendError, FleetError, StoreUnavailable
from .events import Event, Kind
from .history import History
from .leader import LeaderLock
from .model import Phase, PodInfo, PodRecord, PodState
from .notices import NODE_LOST, Tell
from .probes import Probe, make_probe
from .reconcile import Reconciler
from .rolling import roll
from .spec import FleetSpec, Profile
from .store import FleetStore

log = logging.getLogger(__name__)

WARMING_TICK = 0.25  # probe starting pods this often: a Ready pod is offered within it
MIN_FULL_GAP = 0.25  # seconds between the end of a full pass and the start of the next, at least
SCALE_GAP = 0.1  # claims, releases and queue joins gathered this long into one light pass
ORPHAN_GRACE = 30.0  # an indexed pod without a record may be one being created right now
#: A pod that was Ready has been seen: without its record it was deleted (Agones deletes an
#: Unhealthy GameServer at once: v1.56.0 pkg/gameserversets/controller.go,
#: computeReconciliationAction, `case GameServerStateUnhealthy: scheduleDeletion(gs)`),
#: and its user must not wait ORPHAN_GRACE to be told. A
#: few seconds absorb a watch that reconnects and relists meanwhile.
LOST_GRACE = 3.0
MAX_BACKOFF = 60.0
#: A longer pass is cut short (a call on a dead path, say), or its lead, renewed all along,
#: would keep every other controller idle while nothing is done; the next pass finishes it.
PASS_TIMEOUT = 60.0


class Doorbell:
    """What wakes the controller: made before the backend and the controller, so each gets
    it at construction (the backend rings it on a platform change; events and schedule
    firings ring it through `Controller.wake` and `scale_soon`)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.full = True  # the next pass is a full one

    def wake(self) -> None:
        """A full pass soon (a platform event, a new spec, a schedule firing)."""
        self.full = True
        self.event.set()

    def scale_soon(self) -> None:
        """A light pass soon (a claim, release or queue join)."""
        self.event.set()


@dataclass(slots=True)
class ProfileHealth:
    """What the admin and metrics see of a profile beyond counts."""

    failures_in_row: int = 0
    next_create_at: float = 0.0
    last_error: str = ""
    problems: dict[str, str] = field(default_factory=dict)  # pod id -> reason it is not ready
    start_seconds: list[float] = field(default_factory=list)  # recent pod start times


class Controller:
    def __init__(
        self,
        store: FleetStore,
        backend: Backend,
        spec: Callable[[], FleetSpec],
        http: aiohttp.ClientSession,
        *,
        interval: float = 2.0,
        leader_ttl: float = 6.0,
        clock: Callable[[], float] = time.time,
        sizes: Callable[[FleetSpec], Awaitable[list[Profile]]] | None = None,
        pass_timeout: float = PASS_TIMEOUT,
        queue_grace: float = 60.0,
        on_ready: Callable[[str, float], None] | None = None,
        on_reclaim: Callable[[str, str, str, str, float], None] | None = None,
        on_start_failure: Callable[[str, str, float | None], None] | None = None,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.spec = spec
        #: The profiles at their sizes now (schedules, admin overrides: fleet.autoscale);
        #: None scales to the file's sizes.
        self.sizes = sizes
        self.history = History(store.redis)
        self.reconciler = Reconciler(store, backend)
        #: Called with (profile, seconds from creation to Ready) of each pod that becomes Ready.
        self.on_ready = on_ready
        self.http = http
        self.interval = interval
        self.pass_timeout = pass_timeout
        self.queue_grace = queue_grace  # waiting users unseen this long leave the line
        self.clock = clock
        self.lock = LeaderLock(store.redis, store.scripts, keys.CONTROLLER_LEADER, ttl=leader_ttl)
        self.health: dict[str, ProfileHealth] = {}
        #: Called with (user, pod, profile, reason, idle seconds) of each session the
        #: controller ends.
        self.on_reclaim = on_reclaim
        #: Called with (profile, reason, seconds since the pod was created or None when
        #: none was) of each failed start (start_health.REASONS).
        self.on_start_failure = on_start_failure
        #: Give the backend the same one (make_backend's on_change) to wake on its changes.
        self.doorbell = doorbell or Doorbell()
        self._probes: dict[str, Probe] = {}
        self._warming = False
        #: Ready pods per profile made from an older template, as the last full pass saw.
        self._stale: dict[str, int] = {}
        self.leading = False

    def wake(self) -> None:
        """A full pass soon (a platform event, a new spec, a schedule firing)."""
        self.doorbell.wake()

    def scale_soon(self) -> None:
        """A claim, release or queue join: delete what ended and scale, without a full pass."""
        self.doorbell.scale_soon()

    def probe(self, profile: Profile) -> Probe:
        if profile.probe not in self._probes:
            self._probes[profile.probe] = make_probe(profile.probe)
        return self._probes[profile.probe]

    async def run(self) -> None:
        """Lead when we can and reconcile until cancelled; Redis outages are waited out."""
        backoff = 0.5
        next_full = 0.0  # monotonic time the next full pass is due on the tick
        earliest_full = 0.0  # a wake-up brings no full pass before this
        woke = False  # events since the last pass
        try:
            while True:
                raise_if_cancelled()
                try:
                    self.leading = await self.lock.acquire()  # taken or renewed
                    if self.leading:
                        await heartbeats.beat(self.store.redis, heartbeats.LEADER, self.clock())
                    now = time.monotonic()
                    bell = self.doorbell
                    if self.leading and (now >= next_full or (bell.full and now >= earliest_full)):
                        bell.full = woke = False
                        await self._while_leading(self.reconcile())
                        await heartbeats.beat(
                            self.store.redis, heartbeats.CONTROLLER_PASS, self.clock()
                        )
                        done = time.monotonic()
                        tick = min(self.interval, WARMING_TICK) if self._warming else self.interval
                        earliest_full, next_full = done + MIN_FULL_GAP, done + tick
                    elif self.leading and woke:
                        woke = False
                        await self._while_leading(self.rescale())
                        if self._warming:  # it created pods: probe them on the warming tick
                            next_full = min(next_full, now + WARMING_TICK)
                    backoff = 0.5
                except StoreUnavailable as exc:
                    self.leading = False
                    log.warning("controller: %s; retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                # The platform failed it, the host refused (OSError), or time ran out
                # (TimeoutError, an OSError: before issue 18 it was taken for a Redis outage).
                except (FleetError, OSError) as exc:
                    why = str(exc) or f"took more than {self.pass_timeout:.0f}s"
                    log.warning("controller: pass failed (%s); again in %.1fs", why, self.interval)
                    earliest_full = next_full = time.monotonic() + self.interval
                if not self.leading:
                    # Events are the leader's business: a follower only tries for the lock,
                    # and starts with a full pass when it gets it.
                    next_full = 0.0
                    await asyncio.sleep(self.lock.ttl / 3)
                    self.doorbell.event.clear()
                    continue
                due = max(earliest_full, time.monotonic()) if self.doorbell.full else next_full
                due = min(due, time.monotonic() + self.lock.ttl / 3)  # renew the lock in time
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancel that lands as the event fires, and shutdown then hangs.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        await self.doorbell.event.wait()
                        woke = True
                self.doorbell.event.clear()
                if woke:
                    # Let the rest of a burst arrive: one pass for all of it.
                    await asyncio.sleep(SCALE_GAP)
                    self.doorbell.event.clear()
        finally:
            if self.leading:
                with contextlib.suppress(StoreUnavailable):
                    await self.lock.release()

    async def _while_leading(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a pass, renewing the lead every third of its TTL until the pass ends.

        A pass may outlast the lock (the first one creates hundreds of pods): without
        renewal a second controller would lead beside this one. A lead lost anyway
        (Redis failed over, this process stalled) stops the pass where it is; the
        next leader's full pass adopts whatever it left half done.
        """
        task = asyncio.ensure_future(self._bounded(work))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.lock.ttl / 3)
                if not task.done() and not await self.lock.acquire():
                    self.leading = False
                    log.warning("controller: lead lost during a pass; stopping it")
                    break
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()  # the pass's own error, if any

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with asyncio.timeout(self.pass_timeout):
                await work
        finally:
            work.close()  # cancelled before it began: no "never awaited" warning

    async def rescale(self) -> None:
        """The light pass: delete what is marked, then scale each profile (no per-pod work).

        Claims and releases change only counts; a full pass is due when the
        index is not built (its counts would be wrong), so that is done instead.
        """
        if not await self.store.is_built():
            await self.reconcile()
            return
        await self._delete_marked()
        spec = self.spec()
        for profile in await self.sizes(spec) if self.sizes else spec.profiles:
            await self._scale(profile)

    async def reconcile(self) -> None:
        if not self.backend.synced():
            # An empty cache would read as "every pod is gone" and end every session.
            raise BackendError(self.backend.problem() or "the platform has not listed its pods yet")
        spec = self.spec()
        records = {r.id: r for r in await self.backend.observe()}
        built = await self.store.is_built()
        profiles = {p.name for p in spec.profiles} | {r.profile for r in records.values()}
        # Each pod's state from the state sets; a pod's hash is read only when there is
        # something to do for it (_settled): reading every hash was most of a pass.
        states = await self.store.pod_states(profiles)

        alive = [r for r in records.values() if r.phase is not Phase.GONE]
        # The pods' own records win over the index, before anything is adopted or
        # ended by it: after a failover or restore the index may be behind them.
        if await self.reconciler.run(records, states):
            states = await self.store.pod_states(profiles)
        # Whenever anything is missing, EVERY live record goes to the (atomic)
        # restore, which skips pods already indexed: so it may always set the
        # marker, even when Redis was flushed after `built` was read above.
        if not built or any(r.id not in states for r in alive):
            restored, conflicts = await self.store.restore(alive, mark_built=True)
            if restored or not built:
                # Routine: a first start with nothing to adopt, and pods the platform made
                # itself (every GameServer of an Agones Fleet joins the index this way). Out of
                # step: the index was lost with pods in it, or a pod holds a claim it lacked.
                claims = any(r.user for r in alive if r.id not in states)
                level = logging.WARNING if restored and (claims or not built) else logging.INFO
                log.log(level, "index rebuilt from the backend: %d pods adopted", restored)
                await self.store.publish(Event(Kind.REBUILD))
            for pod_id in conflicts:
                log.error("pod %s is labelled for a user who holds another pod; ending it", pod_id)
                await self.backend.delete(pod_id)
            states = await self.store.pod_states(profiles)

        if self.backend.allocates and built:
            index = {p.id: p for p in await self.store.pods_by_id(sorted(states))}
            if await check_allocations(self.store, records.values(), index, self._end):
                states = await self.store.pod_states(profiles)

        now = self.clock()
        self._warming = any(state is PodState.WARMING for _, state in states.values())
        unsettled = [
            pod_id
            for pod_id, (profile, state) in states.items()
            if not self._settled(pod_id, profile, state, records.get(pod_id))
        ]
        if unsettled:
            pods = await self.store.pods_by_id(unsettled)
            await asyncio.gather(*(self._check(p, records.get(p.id), spec, now) for p in pods))
        for rec in records.values():
            if rec.id not in states and rec.phase is Phase.GONE and not rec.terminating:
                await self.backend.delete(rec.id)
        await self._delete_marked()
        for profile in await self.sizes(spec) if self.sizes else spec.profiles:
            await self._roll(profile, records, states)
            await self._scale(profile)

    async def _roll(
        self,
        profile: Profile,
        records: dict[str, PodRecord],
        states: dict[str, tuple[str, PodState]],
    ) -> None:
        """Replace Ready pods of an older template, one at a time (fleet/rolling.py)."""
        self._stale[profile.name] = await roll(self.store, self.backend, profile, records, states)

    def _settled(self, pod_id: str, profile: str, state: PodState, rec: PodRecord | None) -> bool:
        """Nothing to do for this pod this pass (offered or claimed, and alive: most pods).

        Decided here from its state alone, without its hash or a task per pod: with
        hundreds of pods, those were most of a pass. The rest go to `_check`.
        """
        if state is PodState.DELETING:
            return True
        if rec is None or rec.phase in (Phase.GONE, Phase.FAILED) or state is PodState.WARMING:
            return False
        self.health.setdefault(profile, ProfileHealth()).problems.pop(pod_id, None)
        return True

    async def _check(
        self, pod: PodInfo, rec: PodRecord | None, spec: FleetSpec, now: float
    ) -> None:
        if pod.state is PodState.DELETING:
            return
        health = self.health.setdefault(pod.profile, ProfileHealth())
        if rec is None:
            was_ready = pod.ready_at > 0 and pod.state is not PodState.WARMING
            if now - (pod.ready_at if was_ready else pod.created) > (
                LOST_GRACE if was_ready else ORPHAN_GRACE
            ):
                await self._end(pod.id, "dead", "pod no longer exists")
            return
        if rec.phase in (Phase.GONE, Phase.FAILED):
            if pod.state is PodState.WARMING:
                await self._start_failed(
                    pod.profile, start_health.CRASHED, rec.reason, now - pod.created
                )
            await self._end(pod.id, NODE_LOST if rec.node_lost else "dead", rec.reason)
            return
        if pod.state is not PodState.WARMING:
            health.problems.pop(pod.id, None)
            return
        try:
            profile = spec.profile(pod.profile)
        except KeyError:
            await self._end(pod.id, "retired", "profile removed")
            return
        if rec.reason:
            health.problems[pod.id] = rec.reason
        addr = rec.addr or pod.addr
        ready = rec.phase is Phase.READY
        if not ready and self.backend.probes_readiness and addr:
            ready, seen = await self.probe(profile).check(self.http, addr)
            if not ready:
                health.problems[pod.id] = "; ".join(filter(None, (rec.reason, f"probe: {seen}")))
        if ready:
            # Scheduled since it was created: its node, written as the pod is offered, so
            # that a claim at once already sees it (the session_start line, scale-down).
            if await self.store.mark_ready(pod.id, pod.profile, addr, rec.extra.get("node", "")):
                await self._started(pod, rec, health, now)
        elif now - pod.created > profile.start_timeout:
            # What the probe saw (an HTTP 404, a refused connection), not just "no answer".
            saw = health.problems.pop(pod.id, "") or rec.reason or "no answer"
            error = f"not ready after {profile.start_timeout:.0f}s: {saw}"
            await self._start_failed(
                pod.profile, start_health.START_TIMEOUT, error, now - pod.created
            )
            await self._end(pod.id, "start_timeout", error)

    async def _started(
        self, pod: PodInfo, rec: PodRecord, health: ProfileHealth, now: float
    ) -> None:
        """A warming pod was just marked ready: the backend, the start's figures."""
        await self.backend.mark_ready(pod.id)
        health.problems.pop(pod.id, None)
        health.failures_in_row = 0
        await start_health.note_started(self.store.redis, pod.profile)
        health.start_seconds = [*health.start_seconds[-19:], now - pod.created]
        log.info("pod %s ready after %.1fs", pod.id, now - pod.created)
        await self.history.note_start(pod.profile, now - pod.created)
        if self.on_ready:
            self.on_ready(pod.profile, now - pod.created)

    async def _start_failed(
        self, profile: str, reason: str, error: str, seconds: float | None = None
    ) -> None:
        """A pod failed to start: back off creating more, and tell everyone (start_health,
        sdbroker_pod_start_failures_total through on_start_failure)."""
        health = self.health.setdefault(profile, ProfileHealth())
        health.failures_in_row += 1
        health.last_error = error
        await start_health.note_failure(self.store.redis, profile, reason, error, self.clock())
        if self.on_start_failure:
            self.on_start_failure(profile, reason, seconds)

    async def _end(self, pod_id: str, reason: str, detail: str) -> None:
        # Audited, and the user's next page says what happened: without the notice
        # the open tab's polling claimed a new pod unseen (issue 17, item 3).
        ended = await self.store.end_pod(pod_id, reason, tell=Tell("controller", detail))
        if ended is None:
            return
        log.warning("pod %s ended (%s): %s", pod_id, reason, detail)
        if ended.user and self.on_reclaim:
            self.on_reclaim(ended.user, pod_id, ended.profile, reason, 0.0)

    async def _delete_marked(self) -> None:
        async def delete(pod_id: str) -> None:
            try:
                await self.backend.delete(pod_id)
            except FleetError as exc:
                log.warning("could not delete pod %s: %s", pod_id, exc)
                return
            await self.store.forget_pod(pod_id)

        await asyncio.gather(*(delete(pod_id) for pod_id in await self.store.deleting()))

    async def _scale(self, profile: Profile) -> None:
        # A closed tab stops counting toward the target (claim.lua drops it only when
        # somebody claims from this profile, which may be never).
        await self.store.drop_gone_waiters(profile.name, self.queue_grace)
        counts = await self.store.counts(profile.name)
        # Waiting users need pods as much as claimed ones do.
        target = profile.target(counts["claimed"] + counts["queue"])
        if self._stale.get(profile.name):
            target = min(profile.max, target + 1)  # the rolling update's extra pod (rolling.py)
        total = counts["warming"] + counts["ready"] + counts["claimed"]
        if self.backend.manages_replicas:
            await self.backend.set_replicas(profile, target)
            return
        if total < target:
            health = self.health.setdefault(profile.name, ProfileHealth())
            if self.clock() < health.next_create_at:
                return
            if health.failures_in_row:
                delay = min(MAX_BACKOFF, 2.0 ** min(health.failures_in_row, 6))
                health.next_create_at = self.clock() + delay
            await asyncio.gather(*(self._create(profile) for _ in range(target - total)))
            self._warming = True
        elif total > target and counts["ready"]:
            # The least-used nodes' warm pods first, so GPU nodes empty out (fleet/packing.py).
            for pod_id in await self.store.retire_order(
                profile.name, min(total - target, counts["ready"])
            ):
                await self.store.end_pod(pod_id, "scale_down", only_state=str(PodState.READY))

    async def _create(self, profile: Profile) -> None:
        pod_id = f"{profile.name}-{secrets.token_hex(4)}"
        if not await self.store.add_pod(pod_id, profile.name, profile.max):
            return
        try:
            rec = await self.backend.create(profile, pod_id)
        except FleetError as exc:
            log.error("cannot create pod for profile %s: %s", profile.name, exc)
            await self._start_failed(profile.name, start_health.CREATE_FAILED, str(exc))
            await self.store.end_pod(pod_id, "create_failed")
            await self.store.forget_pod(pod_id)
            return
        await self.store.set_pod_fields(pod_id, addr=rec.addr, **rec.extra)
