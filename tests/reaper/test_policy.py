"""The reaper's rules, without Redis or pods."""

from __future__ import annotations

from fleet.model import Candidate
from reaper.policy import Action, Policy, Reason, triage

NOW = 1_000_000.0


def candidate(**kw: object) -> Candidate:
    fields: dict[str, object] = {
        "kind": "idle",
        "user": "ann",
        "last_activity": NOW - 1000,
        "pod": "default-1",
        "profile": "default",
        "since": NOW - 5000,
        "pod_state": "claimed",
        "pod_user": "ann",
        "addr": "http://127.0.0.1:1",
        "claimed_at": NOW - 5000,
        "strikes": 0,
    }
    return Candidate(**(fields | kw))  # type: ignore[arg-type]


def test_triage() -> None:
    assert triage(candidate()) is Action.PROBE
    assert triage(candidate(pod="")) is Action.TIDY  # activity without any claim
    assert triage(candidate(pod_state="")) is Action.DROP  # the pod record is gone
    assert triage(candidate(pod_state="deleting")) is Action.DROP
    assert triage(candidate(pod_user="bob")) is Action.DROP  # stale: the pod serves another


def test_reason_prefers_idle_over_max_session() -> None:
    policy = Policy(idle_timeout=900, max_session=3600)
    assert policy.reason(candidate(), NOW) is Reason.IDLE
    assert policy.reason(candidate(kind="expired"), NOW) is Reason.IDLE  # idle anyway
    active = candidate(kind="expired", last_activity=NOW - 10)
    assert policy.reason(active, NOW) is Reason.MAX_SESSION
    assert policy.is_idle(candidate(last_activity=None), NOW)
    assert policy.session_cutoff(NOW) == NOW - 3600
    assert Policy(idle_timeout=900).session_cutoff(NOW) is None


def test_missed_probes_are_bounded() -> None:
    policy = Policy(idle_timeout=900, missed_probes=3)
    assert [policy.dead_after(n) for n in (1, 2, 3, 4)] == [False, False, False, True]
