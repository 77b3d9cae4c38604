"""fleet.yaml's `groups:` block (issue 19): an admin's bad value is reported at its line,
with the field, all at once; good values reach the limits claim.lua is given."""

from __future__ import annotations

import pytest

from fleet import SpecError, parse_spec
from fleet.spec.groups import budgeted, session_limits

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
  "": {max_sessions: 1}
  ok: {max_sessions: 4, daily_gpu_hours: 2.5}
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
        "fleet.yaml:13: groups.staff.priority: unknown field",
        "fleet.yaml:14: groups.: key must not be empty",
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
