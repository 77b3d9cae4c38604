"""The fleet's front door for the broker and the reaper: claim, release, pod trouble.

A claim is the Lua call in the store, then the claim is written on the pod's
own record (file or label) and the WebUI is pointed at the user's outputs.
If the pod is gone or its WebUI fails, the pod is ended (single-use) and
another taken; if its own record names someone else (the index was behind it
after a Redis failover or restore), it goes back to that owner and another is
taken. If the platform's API only failed to
answer (a 503, a 429, no route), the pod is kept: the claim stays unbound, the
user waits, and their next request binds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import aiohttp

from .backends.base import Backend
from .budgets import GroupBudgets
from .errors import Conflict, FleetError, PodGone, StoreUnavailable
from .events import Event, Kind
from .model import Claim, Ended, Phase, Retry, Waiting, record_groups
from .notices import NODE_LOST, Tell
from .probes import make_probe
from .reconcile import owner_wins
from .slug import slugify
from .spec import FleetSpec, Profile
from .spec.groups import priority_of
from .store import FleetStore
from .store.claims import GroupBars

log = logging.getLogger(__name__)
BIND_WAIT = 15.0  # a claim still binding after this long lost its claimer: bind it here
#: Seconds between looks at a claim another request is binding, should its `bound` event
#: (bound.lua) be lost: the event, not this, normally ends the wait.
BIND_FALLBACK = 1.0
#: Seconds before a second look at a pod that refused the proxy yet looks alive: a
#: process killed this instant closes its sockets before it is seen to exit.
UNREACHABLE_RELOOK = 0.25


class Fleet:
    def __init__(
        self,
        store: FleetStore,
        backend: Backend,
        spec: FleetSpec,
        http: aiohttp.ClientSession,
        *,
        queue_grace: float = 60.0,
        clock: Callable[[], float] = time.time,
        on_claimed: Callable[[str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.spec = spec
        self.http = http
        self.queue_grace = queue_grace
        self.clock = clock
        #: Each group's GPU-hours of the last day, for the budgets of fleet.yaml's groups:.
        self.budgets = GroupBudgets(store, clock=clock)
        #: Called with (profile, seconds the whole claim took) after each new claim is bound.
        self.on_claimed = on_claimed
        #: user -> the wake-ups of requests waiting for that user's claim to be bound.
        self._binding: dict[str, set[asyncio.Event]] = {}

    def use_spec(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.backend.update_spec(spec)

    def default_profile(self) -> Profile:
        return self.spec.profiles[0]

    async def profile_for(self, user: str) -> str:
        """The profile a user gets: their remembered choice among several, else the first."""
        if len(self.spec.profiles) > 1:
            chosen = await self.store.choice(user)
            if chosen and any(p.name == chosen for p in self.spec.profiles):
                return chosen
        return self.default_profile().name

    async def claim(
        self,
        user: str,
        profile: str | None = None,
        *,
        join_queue: bool = True,
        unless_ended: bool = False,
        groups: Iterable[str] = (),
    ) -> Claim | Waiting:
        """The user's pod, taking a warm one if they have none; else their place in line.

        A claim another broker made a moment ago is returned once that broker has
        prepared the pod (its record, the user's outputs folder), never before:
        a request sent earlier could save a picture outside the user's folder.
        `unless_ended`: SessionEnded while the user has an unread notice that
        their session ended, in the same Redis call (nothing is claimed).
        `groups`: the user's groups now, kept on a new claim: its GPU time is theirs too,
        and the limits of fleet.yaml's groups: apply to a new one (Limited: none now).
        """
        name = profile or await self.profile_for(user)
        started = time.perf_counter()
        strategy = self.backend.claim_strategy  # take a Ready pod, or have the platform allocate
        result = await strategy.claim(
            self, user, name, join_queue, unless_ended, started, tuple(groups)
        )
        if isinstance(result, Claim) and result.binding:
            return await self._when_bound(result)
        return result

    async def group_bars(self, groups: tuple[str, ...]) -> GroupBars | None:
        """The limits of fleet.yaml's groups: for a person in `groups` (None: no groups:)."""
        return await self.budgets.bars(self.spec, groups) if self.spec.groups else None

    def priority_of(self, groups: Iterable[str]) -> int:
        """A person's priority in the waiting line: the highest of their groups' in
        fleet.yaml's groups: (0 when none is listed); taken when they join the line."""
        return priority_of(self.spec.groups, groups)

    def on_event(self, event: Event) -> None:
        """Pub/sub handler: a claim bound or ended wakes the requests waiting for it; so does
        a reconnect (its event may have been missed)."""
        woken: Iterable[asyncio.Event]
        if event.kind in (Kind.BOUND, Kind.RELEASE):
            woken = self._binding.get(event.subject, ())
        elif event.kind is Kind.RECONNECT:
            woken = {w for waiting in self._binding.values() for w in waiting}
        else:
            return
        for wake in woken:
            wake.set()

    async def _when_bound(self, claim: Claim) -> Claim | Waiting:
        """Wait for the claimer to finish binding; if it never does (it died, or the
        platform's API did not answer it), bind here: BIND_WAIT after the claim was made.

        Woken by the `bound` event (fleet/lua/bound.lua, heard through `on_event`), and
        looks again every BIND_FALLBACK in case that event was lost.
        Binding twice is harmless: both steps are idempotent for the same user.
        """
        deadline = time.monotonic() + min(
            BIND_WAIT, max(0.0, claim.since + BIND_WAIT - self.clock())
        )
        wake = asyncio.Event()
        waiting = self._binding.setdefault(claim.user, set())
        waiting.add(wake)
        try:
            while True:
                wake.clear()  # before looking: an event from now on ends the wait below
                current = await self.store.lookup(claim.user)
                if current is None or current.pod != claim.pod:
                    return Retry(claim.profile)  # it failed: the next request claims again
                if not current.binding:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(BIND_FALLBACK, left)):  # not wait_for (3.11)
                        await wake.wait()
        finally:
            waiting.discard(wake)
            if not waiting and self._binding.get(claim.user) is waiting:
                del self._binding[claim.user]
        log.warning("claim of pod %s for %s left unbound; binding it here", claim.pod, claim.user)
        return claim if await self.bind_or_end(claim) else Retry(claim.profile)

    async def bind_or_end(self, claim: Claim) -> bool | None:
        """Bind the claim and mark it bound (True); if the pod's record names someone else,
        give it back to them (False), if it is gone or failing, end it (False); if the platform only failed to answer, keep both
        and let the user wait (None: the claim stays binding, a later request binds it)."""
        try:
            await self._bind(claim)
        except Conflict as exc:
            # The pod's record names someone else: the index was behind it (a Redis
            # failover or restore). Its owner keeps it; this user takes another.
            if await owner_wins(self.store, self.backend, claim.pod, claim.user):
                return False
            log.warning("claim of pod %s for %s failed (%s)", claim.pod, claim.user, exc)
            await self.store.end_pod(claim.pod, "claim_failed", only_user=claim.user)
            return False
        except (PodGone, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("claim of pod %s for %s failed (%s)", claim.pod, claim.user, exc)
            await self.store.end_pod(claim.pod, "claim_failed", only_user=claim.user)
            return False
        except FleetError as exc:  # the API refused for now (Unavailable), or refused us
            log.warning("claim of pod %s for %s waits: %s", claim.pod, claim.user, exc)
            return None
        await self.store.mark_bound(claim)
        return True

    def claimed(self, claim: Claim, started: float, node: str = "") -> None:
        """A new claim is bound: one log line (the session's start: its fields apart for a
        log sink, as store.end_pod logs its end), and the metric."""
        took = time.perf_counter() - started
        log.info(
            "claimed pod %s for %s (profile %s, waited %.1fs in line, claim took %.3fs)",
            claim.pod, claim.user, claim.profile, claim.waited, took,
            extra={"event": "session_start", "user": claim.user, "groups": list(claim.groups),
                   "profile": claim.profile, "pod": claim.pod, "node": node or claim.node,
                   "slot": claim.slot, "start": claim.since, "waited": round(claim.waited, 1)},
        )  # fmt: skip
        if self.on_claimed is not None:
            self.on_claimed(claim.profile, took)

    async def _bind(self, claim: Claim) -> None:
        """Record the claim on the pod, then point its WebUI at the user's folder.

        In this order, never side by side: when the pod turns out to be someone
        else's (mark_claimed raises Conflict), their WebUI must not have been
        pointed at this user's outputs. The folder is made while the WebUI is
        told (the path tells it nothing until it saves a picture, which takes a
        request of the user's, sent only once the claim is bound).
        """
        slug = slugify(claim.user)
        profile = self.spec.profile(claim.profile)
        groups = record_groups(claim.groups, self.spec.groups)  # kept by a rebuild (restore.lua)
        await self.backend.mark_claimed(claim.pod, claim.user, slug, groups)
        told, made = await asyncio.gather(
            make_probe(profile.probe).set_outputs(
                self.http, claim.addr, self.backend.outputs_path(slug)
            ),
            self.backend.prepare_outputs(slug),
            return_exceptions=True,
        )
        for outcome in (told, made):  # the pod's failure first: it says more
            if isinstance(outcome, BaseException):
                raise outcome
        if profile.keep_settings:  # before mark_bound: before the user's first request
            await self.backend.keep_settings(claim.pod, claim.addr, slug, profile, self.http)

    async def lookup(self, user: str) -> Claim | None:
        return await self.store.lookup(user)

    async def release(self, user: str, reason: str, *, pod: str | None = None) -> Ended | None:
        """End the user's claim (admin, reaper); the controller deletes the pod."""
        claim = await self.store.lookup(user)
        if claim is None or (pod is not None and claim.pod != pod):
            return None
        return await self.store.end_pod(claim.pod, reason, only_user=user)

    async def pod_unreachable(self, claim: Claim) -> bool:
        """The proxy could not reach the user's pod: end the claim if the pod is gone.

        Returns True when the claim was ended, here or a moment before by someone else
        (the user gets a new pod next time).
        """
        try:
            rec = await self.backend.phase_of(claim.pod)
            if rec is not None and rec.phase not in (Phase.GONE, Phase.FAILED):
                await asyncio.sleep(UNREACHABLE_RELOOK)
                rec = await self.backend.phase_of(claim.pod)
        except FleetError as exc:
            log.warning("cannot ask the backend about pod %s: %s", claim.pod, exc)
            return False
        if rec is not None and rec.phase not in (Phase.GONE, Phase.FAILED):
            return False
        reason = rec.reason if rec else "pod no longer exists"
        why = NODE_LOST if rec is not None and rec.node_lost else "dead"
        # The notice makes the open tab's next background request a 409: only a
        # page load starts a new session (issue 17, item 3).
        ended = await self.store.end_pod(
            claim.pod, why, only_user=claim.user, tell=Tell("proxy", reason)
        )
        if ended is not None:
            return True
        # Ended already (the controller heard the process exit first): ended all the same.
        current = await self.store.lookup(claim.user)
        return current is None or current.pod != claim.pod


async def stop_fleet(store: FleetStore, backend: Backend, spec: FleetSpec) -> None:
    """End every claim and stop every pod: a one-machine broker's Ctrl-C."""
    try:
        for pod in await store.pods(p.name for p in spec.profiles):
            await store.end_pod(pod.id, "shutdown")
            await backend.delete(pod.id)
            await store.forget_pod(pod.id)
    except StoreUnavailable as exc:
        log.warning("could not end claims on shutdown: %s", exc)
    except (FleetError, OSError) as exc:  # the platform failed it: the rest still stop below
        log.warning("could not stop a pod on shutdown: %s", exc)
    await backend.stop_all()
