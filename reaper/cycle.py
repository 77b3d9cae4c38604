"""One reclaim cycle: find idle and expired sessions, ask their WebUIs, end the ones nobody uses.

The cycle costs O(k) Redis commands for k candidates, never a scan: one
script reads every candidate with its claim and pod (reap_candidates.lua),
then each session that ends costs end_pod plus one audit+notice round trip.
Busy sessions are refreshed in one ZADD and remembered (keys.BUSY): a session
found generating is probed every cycle until its generation ends, and its idle
time counts from then (as JupyterHub counts a finished kernel as activity), not
from the cycle that happened to look while it was busy. A session past its profile's
max_session ends busy or not (the busy answer is its user's code speaking); its
probe is asked only when it is idle too, and then only for the words. Ending is a
compare-and-delete in Lua, so two cycles running at once (two brokers, a broker and
a CronJob) end each session once and audit it once.

One pod's trouble never stops the cycle: every probe and every reclaim is
caught on its own and counted in `errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import aiohttp

from fleet import (
    FALLBACK_KIND,
    Backend,
    Candidate,
    FleetSpec,
    FleetStore,
    Phase,
    Probe,
    Tell,
    heartbeats,
    make_probe,
)

from .metrics import RECLAIMS
from .policy import NOTICE_TTL, Action, Policy, Reason, idle_seconds, triage

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 12.0  # a1111 asks two URLs with 5 s each; this bounds any probe as a whole
PROBE_CONCURRENCY = 32
UNREACHABLE = (TimeoutError, aiohttp.ClientConnectionError, OSError)
BUSY, UNANSWERED, END, TIDY = "busy", "unanswered", "end", "tidy"
DONE, FORGET = "done", "forget"  # a generation ended since the last cycle; a stale busy entry

_QUIET = (Reason.IDLE, Reason.GONE)  # ends that a generation in progress postpones
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Summary:
    """What one cycle saw and did: the CronJob's JSON line and the broker's log line.

    `checked` sessions were candidates; of those `idle` were found unused (and
    ended unless this is a dry run or they came back meanwhile), `busy` were
    generating, `unreachable` did not answer the probe and were kept for now.
    `finished` were generating at the last cycle and are not any more: their
    idle time starts now. `ended` lists the sessions ended (in a dry run: that
    would be).
    """

    sessions: int = 0
    checked: int = 0
    idle: int = 0
    busy: int = 0
    finished: int = 0
    unreachable: int = 0
    reclaimed: int = 0
    errors: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    reasons: dict[str, int] = field(default_factory=dict)
    ended: list[dict[str, object]] = field(default_factory=list)

    def json_line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=False)


@dataclass(slots=True)
class _Verdict:
    candidate: Candidate
    outcome: str
    reason: Reason | None = None
    detail: str = ""
    refresh: bool = False  # busy and idle, or its generation just ended: activity is set to now
    generating: bool = False  # found generating: probed again next cycle
    forget: bool = False  # not generating (any more): leaves the busy hash
    answered: bool = False  # the probe answered: its missed-probe count starts over
    error: bool = False  # something unexpected happened while examining it


def _ended(candidate: Candidate, reason: Reason, now: float) -> dict[str, object]:
    return {
        "user": candidate.user,
        "pod": candidate.pod,
        "reason": str(reason),
        "idle_seconds": int(idle_seconds(candidate, now)),
    }


class ReapCycle:
    """Runs reclaim cycles; holds only references, so building one does no I/O.

    `spec` may be a callable so a reloaded fleet spec applies from the next
    cycle. `backend`, when given, tells a dead pod at once (its process or
    pod is gone) instead of after `missed_probes` unanswered cycles.
    """

    def __init__(
        self,
        store: FleetStore,
        spec: FleetSpec | Callable[[], FleetSpec],
        http: aiohttp.ClientSession,
        *,
        backend: Backend | None = None,
        settle: float = 0.0,
        missed_probes: int = 3,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        probe_for: Callable[[str], Probe] = make_probe,
        probe_timeout: float = PROBE_TIMEOUT,
        concurrency: int = PROBE_CONCURRENCY,
    ) -> None:
        self.store = store
        self.spec = spec if callable(spec) else (lambda: spec)
        self.http = http
        self.backend = backend
        self.settle = settle
        self.missed_probes = missed_probes
        self.clock = clock
        self.sleep = sleep
        self.probe_for = probe_for
        self.probe_timeout = probe_timeout
        self.concurrency = concurrency
        self._probes: dict[str, Probe] = {}

    def policy(self, spec: FleetSpec) -> Policy:
        return Policy.from_spec(spec, settle=self.settle, missed_probes=self.missed_probes)

    async def run(self, *, dry_run: bool = False) -> Summary:
        """One cycle. Raises only when Redis cannot be read at all (StoreUnavailable)."""
        started = time.perf_counter()
        spec = self.spec()
        policy = self.policy(spec)
        now = self.clock()
        summary = Summary(dry_run=dry_run)
        verdicts: list[_Verdict] = []
        if self.backend is not None:
            verdicts, summary.errors = await self._sweep(self.backend)
        summary.sessions, candidates = await self.store.reap_candidates(
            policy.idle_cutoff(now),
            session_cutoffs=policy.session_cutoffs(now),
            limit=policy.batch,
        )
        candidates += await self._gone(candidates, policy, now)
        read_at = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)
        verdicts += await asyncio.gather(
            *(self._examine(c, spec, policy, now, gate, dry_run) for c in candidates)
        )
        summary.checked = len(verdicts)
        for v in verdicts:
            summary.errors += v.error
            if v.outcome == BUSY:
                summary.busy += 1
            elif v.outcome == DONE:
                summary.finished += 1
            elif v.outcome == UNANSWERED:
                summary.unreachable += 1
            elif v.outcome == END:
                summary.idle += v.reason is not Reason.DEAD
        ending = [v for v in verdicts if v.outcome in (END, TIDY)]
        if dry_run:
            summary.ended = [
                _ended(v.candidate, v.reason, now) for v in ending if v.reason is not None
            ]
        else:
            summary.errors += await self._keep(verdicts, now)
            if any(v.reason in (Reason.IDLE, Reason.GONE) for v in ending):
                # Activity a broker held in memory when we read has been flushed by now.
                await self.sleep(max(0.0, policy.settle - (time.monotonic() - read_at)))
            for entry, failed in await asyncio.gather(*(self._end(v, policy, now) for v in ending)):
                summary.errors += failed
                if entry is not None:
                    summary.ended.append(entry)
        summary.reclaimed = 0 if dry_run else len(summary.ended)
        for entry in summary.ended:
            reason = str(entry["reason"])
            summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
        summary.seconds = round(time.perf_counter() - started, 4)
        if not dry_run:  # sdbroker_heartbeat_timestamp_seconds{component="reaper"}
            await heartbeats.beat(self.store.redis, heartbeats.REAPER, self.clock())
        return summary

    # --- looking ------------------------------------------------------------------

    async def _gone(
        self, candidates: list[Candidate], policy: Policy, now: float
    ) -> list[Candidate]:
        """Sessions whose user closed their last tab at least reclaim_when_gone ago and
        has not been active since (only profiles that have one); each is probed like an
        idle one, so a generation in progress keeps it."""
        cutoffs = policy.gone_cutoffs(now)
        # Called with no cutoffs too: it also clears the counts of brokers that stopped.
        found = await self.store.gone_candidates(cutoffs, limit=policy.batch)
        seen = {c.user for c in candidates}
        return [c for since, c in found if c.user not in seen and policy.is_gone(c, since, now)]

    def _probe(self, spec: FleetSpec, profile: str) -> Probe:
        try:
            kind = spec.profile(profile).probe
        except KeyError:  # profile removed by a reload: the registry's fallback kind
            kind = FALLBACK_KIND
        if kind not in self._probes:
            self._probes[kind] = self.probe_for(kind)
        return self._probes[kind]

    async def _examine(
        self,
        c: Candidate,
        spec: FleetSpec,
        policy: Policy,
        now: float,
        gate: asyncio.Semaphore,
        dry_run: bool,
    ) -> _Verdict:
        """Decide one candidate; never raises (a bug here must not stop the cycle)."""
        try:
            action = triage(c)
            if c.kind == "busy" and (action is not Action.PROBE or not c.was_busy):
                # That session ended or moved to another pod: the idle/expired paths own it.
                return _Verdict(c, FORGET, forget=True)
            if action is Action.TIDY:
                return _Verdict(c, TIDY)
            if action is Action.DROP:
                return _Verdict(c, END, Reason.DEAD, "the claim's pod no longer exists")
            reason = policy.reason(c, now)
            if reason is Reason.MAX_SESSION:
                # Past its hard limit and in use: ended unprobed, busy or not. The busy
                # answer comes from a WebUI its user controls, so it cannot extend it.
                return _Verdict(c, END, reason, forget=bool(c.busy_pod))
            expired = policy.is_expired(c, now)  # and idle: the probe only picks the words
            try:
                async with gate, asyncio.timeout(self.probe_timeout):
                    busy = await self._probe(spec, c.profile).busy(self.http, c.addr)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if expired:
                    return _Verdict(c, END, Reason.MAX_SESSION, forget=bool(c.busy_pod))
                if c.kind == "busy":  # not idle yet: no strike; the idle path judges it later
                    return _Verdict(c, UNANSWERED, detail=repr(exc))
                return await self._missed(c, policy, exc, dry_run)
            if busy and expired:
                return _Verdict(c, END, Reason.MAX_SESSION, answered=True, forget=True)
            if busy:
                return _Verdict(c, BUSY, refresh=reason in _QUIET, answered=True, generating=True)
            if reason in _QUIET and c.was_busy:
                # Its generation ended since the last cycle: idle time counts from now.
                return _Verdict(c, DONE, refresh=True, answered=True, forget=True)
            return _Verdict(c, END, reason, answered=True, forget=bool(c.busy_pod))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper: examining the session of %s failed", c.user)
            return _Verdict(c, "error", error=True)

    async def _missed(
        self, c: Candidate, policy: Policy, exc: BaseException, dry_run: bool
    ) -> _Verdict:
        """The WebUI did not answer: dead if its pod is gone or it missed too often, else kept."""
        unexpected = not isinstance(exc, UNREACHABLE)
        if unexpected:
            log.warning("reaper: busy probe of pod %s failed: %r", c.pod, exc)
        if self.backend is not None:
            try:
                rec = await self.backend.phase_of(c.pod)
            except Exception as err:
                log.warning("reaper: cannot ask the backend about pod %s: %s", c.pod, err)
            else:
                if rec is None or rec.phase in (Phase.GONE, Phase.FAILED):
                    why = rec.reason if rec is not None and rec.reason else "pod no longer exists"
                    return _Verdict(c, END, Reason.DEAD, why, error=unexpected)
        strikes = c.strikes + 1 if dry_run else await self.store.strike(c.pod)
        if strikes < 0:
            return _Verdict(c, END, Reason.DEAD, "pod record gone", error=unexpected)
        if policy.dead_after(strikes):
            why = f"no answer to {strikes} busy probes in a row ({exc!r})"
            return _Verdict(c, END, Reason.DEAD, why, error=unexpected)
        return _Verdict(c, UNANSWERED, detail=repr(exc), error=unexpected)

    async def _sweep(self, backend: Backend) -> tuple[list[_Verdict], int]:
        """Claimed pods whose process or pod is gone, as the backend reports them; (dead, errors)."""
        try:
            records = await backend.observe()
        except Exception:
            log.exception("reaper: cannot list pods from the backend")
            return [], 1
        dead = []
        for rec in records:
            if rec.user and rec.phase in (Phase.GONE, Phase.FAILED):
                c = Candidate(
                    "dead", rec.user, None, rec.id, rec.profile, rec.claimed_at,
                    "claimed", rec.user, rec.addr, rec.claimed_at, 0,
                )  # fmt: skip
                dead.append(_Verdict(c, END, Reason.DEAD, rec.reason or "pod is gone"))
        return dead, 0

    # --- acting -------------------------------------------------------------------

    async def _keep(self, verdicts: list[_Verdict], now: float) -> int:
        """Refresh busy and just-finished sessions, remember which are generating (one
        round trip), and reset answered pods' missed-probe counts."""
        refresh = {v.candidate.user: now for v in verdicts if v.refresh}
        generating = {v.candidate.user: v.candidate.pod for v in verdicts if v.generating}
        forget = [v.candidate.user for v in verdicts if v.forget]
        answered = [v.candidate.pod for v in verdicts if v.answered and v.candidate.strikes]
        try:
            if refresh or generating or forget:
                await self.store.note_busy(refresh, generating, forget)
            if answered:
                await self.store.clear_strikes(answered)
        except Exception:
            log.exception("reaper: could not refresh %d busy sessions", len(refresh))
            return 1
        return 0

    async def _end(
        self, v: _Verdict, policy: Policy, now: float
    ) -> tuple[dict[str, object] | None, bool]:
        """End one session (compare-and-delete); (what was ended or None, failed)."""
        c = v.candidate
        try:
            if v.outcome == TIDY:
                await self.store.drop_claim(c.user, "")
                return None, False
            assert v.reason is not None
            tell = Tell("reaper", v.detail, policy.limit_of(c.profile), policy.notice_ttl)
            if c.kind != "dead" and not c.pod_exists:
                ended = await self.store.drop_claim(c.user, c.pod, str(v.reason), tell) == 1
            else:
                guard = policy.activity_guard(v.reason, c.profile, now)
                result = await self.store.end_pod(
                    c.pod, str(v.reason), only_user=c.user, idle_since=guard, tell=tell
                )
                ended = result is not None
            if not ended:  # another cycle ended it first, or the user came back
                return None, False
            RECLAIMS.labels(c.profile, str(v.reason)).inc()
            log.info(
                "reaper: ended the session of %s on pod %s (%s, idle %ds)%s",
                c.user, c.pod, v.reason, idle_seconds(c, now), f": {v.detail}" if v.detail else "",
            )  # fmt: skip
            return _ended(c, v.reason, now), False
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reaper: ending the session of %s on pod %s failed", c.user, c.pod)
            return None, True


async def end_session(
    store: FleetStore,
    user: str,
    reason: Reason = Reason.ADMIN,
    *,
    by: str = "reaper",
    detail: str = "",
    notice_ttl: float = NOTICE_TTL,
) -> bool:
    """End one user's session now (an admin's button, the user's own Stop), audited and
    counted like a reclaim; `by` is who asked and `detail` why, for the audit entry."""
    claim = await store.lookup(user)
    if claim is None:
        return False
    tell = Tell(by, detail, notice_ttl=notice_ttl)
    if await store.end_pod(claim.pod, str(reason), only_user=user, tell=tell) is None:
        return False
    RECLAIMS.labels(claim.profile, str(reason)).inc()
    return True
