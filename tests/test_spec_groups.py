"""fleet.yaml's `groups:` block (issue 19): an admin's bad value is reported at its line,
with the field, all at once; good values reach the limits claim.lua is given."""

from __future__ import annotations

import pytest

from fleet import SpecError, parse_spec
from fleet.spec.groups import budgeted, priority_of, session_limits

ONE_PROFILE = """backend: local
profiles:
  - name: default
    max: 2
    local: {command: [webui, "{port}"]}
"""
BAD = (
    ONE_PROFILE
    + """groups:
  students:
    max_sessions: 0
    daily_gpu_hours: -1
  staff:
    max_sessions: ten
    daily_gpu_hours: .inf
    priority: 3
    colour: red
  "": {max_sessions: 1}
  ok: {max_sessions: 4, daily_gpu_hours: 2.5}
  first: {priority: 101}
  last: {priority: "-1"}
  half: {priority: 1.5}
"""
)


def test_bad_group_limits_are_reported_at_their_lines() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(BAD, "fleet.yaml")
    assert [f"{i.file}:{i.line}: {i.field}: {i.message}" for i in caught.value.issues] == [
        "fleet.yaml:8: groups.students.max_sessions: must be at least 1, got 0",
        "fleet.yaml:9: groups.students.daily_gpu_hours: must be greater than 0.0, got -1",
        "fleet.yaml:11: groups.staff.max_sessions: must be a whole number, got 'ten'",
        "fleet.yaml:12: groups.staff.daily_gpu_hours: must be a finite number",
        "fleet.yaml:14: groups.staff.colour: unknown field",
        "fleet.yaml:15: groups.: key must not be empty",
        "fleet.yaml:17: groups.first.priority: must be at most 100, got 101",
        "fleet.yaml:18: groups.last.priority: must be a whole number, got '-1'",
        "fleet.yaml:19: groups.half.priority: must be a whole number, got 1.5",
    ]


def test_limits_of_a_persons_groups() -> None:
    spec = parse_spec(
        ONE_PROFILE + "groups:\n  students: {max_sessions: 10}\n"
        "  night: {daily_gpu_hours: 40}\n  both: {max_sessions: 2, daily_gpu_hours: 1.5}\n"
    )
    assert spec.groups["students"].max_sessions == 10
    assert spec.groups["night"].daily_gpu_hours == 40.0
    member_of = ["staff", "students", "both", "night"]
    assert session_limits(spec.groups, member_of) == (("both", 2), ("students", 10))
    assert budgeted(spec.groups, member_of) == {"both": 1.5, "night": 40.0}
    assert session_limits(spec.groups, ["staff"]) == () and parse_spec(ONE_PROFILE).groups == {}


def test_a_persons_priority_is_their_highest_listed_groups() -> None:
    """Higher is served first; a person in no listed group (or a group listed without one)
    stands at 0; a lowered group counts only when nothing of theirs ranks higher."""
    spec = parse_spec(
        ONE_PROFILE + "groups:\n  staff: {priority: 10}\n  tutors: {priority: 3}\n"
        "  guests: {priority: -5}\n  students: {max_sessions: 10}\n"
    )
    assert spec.groups["students"].priority == 0
    assert priority_of(spec.groups, ["tutors", "staff", "guests"]) == 10
    assert priority_of(spec.groups, ["guests", "students"]) == 0
    assert priority_of(spec.groups, ["guests", "visitors"]) == -5
    assert priority_of(spec.groups, ["visitors"]) == 0 and priority_of(spec.groups, []) == 0
