"""What is idle, expired or dead, and what a reclaim leaves behind: pure decisions.

Kept apart from the cycle (which does I/O) so every rule can be read in one
place and tested without Redis or pods. Times are unix seconds from the
caller's clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleet import (
    NOTICE_TTL,  # an unread "your session ended" notice is kept this long
    Candidate,
    FleetSpec,
)

BATCH = 1000  # candidates of each kind per cycle; a backlog drains over a few cycles


class Reason(enum.StrEnum):
    """Why a session ended: the audit stream's and the metric's `reason`."""

    IDLE = "idle"
    MAX_SESSION = "max_session"
    DEAD = "dead"
    ADMIN = "admin"
    STOPPED = "stopped"  # the user pressed "Stop my WebUI" (broker/home.py)
    GONE = "gone"  # no tab open for the profile's reclaim_when_gone, and not generating


class Action(enum.StrEnum):
    """What a candidate needs before anything is decided about it."""

    PROBE = "probe"  # a live pod: ask the WebUI whether it is busy
    DROP = "drop"  # a claim whose pod record is gone or ending: the session is dead
    TIDY = "tidy"  # an activity entry with no claim at all: remove it, nobody to tell


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules of one cycle, read from the fleet spec (which may be reloaded between cycles).

    `settle` is how late a broker may write activity (SDB_ACTIVITY_FLUSH): a
    cycle ends nothing sooner than that after reading its candidates, so
    activity still in a broker's memory at that moment has reached Redis and
    end_pod's guard sees it. `missed_probes` is how many cycles in a row a
    pod may leave the busy probe unanswered (a pod under load answers slowly)
    before it is declared dead.
    """

    idle_timeout: float
    max_session: float | None = None  # for profiles not in `limits` (one removed by a reload)
    limits: Mapping[str, float | None] = field(default_factory=dict)  # max_session per profile
    gone: Mapping[str, float] = field(default_factory=dict)  # reclaim_when_gone per profile
    settle: float = 0.0
    missed_probes: int = 3
    notice_ttl: float = NOTICE_TTL
    batch: int = BATCH

    @classmethod
    def from_spec(cls, spec: FleetSpec, *, settle: float = 0.0, missed_probes: int = 3) -> Policy:
        return cls(
            idle_timeout=spec.idle_timeout,
            max_session=spec.max_session,
            limits={p.name: spec.session_limit(p.name) for p in spec.profiles},
            gone={
                p.name: p.reclaim_when_gone
                for p in spec.profiles
                if p.reclaim_when_gone is not None
            },
            settle=settle,
            missed_probes=missed_probes,
        )

    def idle_cutoff(self, now: float) -> float:
        """Sessions whose last activity is at or before this are idle."""
        return now - self.idle_timeout

    def session_cutoff(self, now: float) -> float | None:
        """Sessions claimed at or before this are past max_session (None: no limit)."""
        return None if self.max_session is None else now - self.max_session

    def limit_of(self, profile: str) -> float | None:
        """The max_session of a profile's sessions, in seconds (None: no limit)."""
        return self.limits.get(profile, self.max_session)

    def session_cutoffs(self, now: float) -> dict[str, float | None]:
        """Per profile: sessions claimed at or before this are past its max_session."""
        return {p: None if s is None else now - s for p, s in self.limits.items()}

    def is_expired(self, candidate: Candidate, now: float) -> bool:
        """Past its profile's max_session, whatever its WebUI says."""
        limit = self.limit_of(candidate.profile)
        start = candidate.since or candidate.claimed_at
        return limit is not None and bool(start) and start <= now - limit

    def is_idle(self, candidate: Candidate, now: float) -> bool:
        last = candidate.last_activity
        return last is None or last <= self.idle_cutoff(now)

    def gone_cutoffs(self, now: float) -> dict[str, float]:
        """Per profile with reclaim_when_gone: users whose last tab closed at or before
        this are gone (profiles without one are not named)."""
        return {p: now - after for p, after in self.gone.items()}

    def gone_cutoff(self, profile: str, now: float) -> float | None:
        after = self.gone.get(profile)
        return None if after is None else now - after

    def is_gone(self, candidate: Candidate, gone_since: float, now: float) -> bool:
        """No tab since its profile's reclaim_when_gone, and no activity either: activity
        after the last tab closed means someone still uses it (a script, a tab the broker
        cannot see), which only the idle timeout may end."""
        cutoff = self.gone_cutoff(candidate.profile, now)
        last = candidate.last_activity
        return cutoff is not None and gone_since <= cutoff and (last is None or last <= cutoff)

    def reason(self, candidate: Candidate, now: float) -> Reason:
        """Why this session would end if its WebUI is not busy.

        An expired session that is also idle ends as idle: idleness would have
        ended it anyway, and "idle for N minutes" tells the user more.
        """
        if self.is_expired(candidate, now) and not self.is_idle(candidate, now):
            return Reason.MAX_SESSION
        if candidate.kind == "gone" and not self.is_idle(candidate, now):
            return Reason.GONE
        return Reason.IDLE

    def activity_guard(self, reason: Reason, profile: str, now: float) -> float | None:
        """end_pod's guard: the session ends only if its last activity is at or before
        this (None: unguarded; max_session and dead end whatever the activity)."""
        if reason is Reason.IDLE:
            return self.idle_cutoff(now)
        if reason is Reason.GONE:
            return self.gone_cutoff(profile, now)
        return None

    def dead_after(self, strikes: int) -> bool:
        """True when a pod has now missed more busy probes in a row than allowed."""
        return strikes > self.missed_probes


def triage(candidate: Candidate) -> Action:
    """What a candidate needs first, from what Redis says about its claim and pod."""
    if not candidate.pod:
        return Action.TIDY
    if not candidate.pod_exists:
        return Action.DROP
    return Action.PROBE


def idle_seconds(candidate: Candidate, now: float) -> float:
    """Seconds since the last recorded activity (since the claim when there is none)."""
    last = candidate.last_activity if candidate.last_activity is not None else candidate.since
    return max(0.0, now - last) if last else 0.0


def session_seconds(candidate: Candidate, now: float) -> float:
    start = candidate.since or candidate.claimed_at
    return max(0.0, now - start) if start else 0.0
