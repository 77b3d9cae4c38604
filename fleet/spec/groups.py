"""The fleet file's `groups:` block: limits an admin puts on groups of people (issue 19).

A group is named as the identity provider spells it (the identity's groups). A person
in several limited groups is held by each: every limit of every group they are in
applies. Limits are checked when a new session would start, never against a running
one (claim.lua, through fleet/lua/_groups.lua; the budget figures: fleet/budgets.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .types import PositiveCount

GpuHours = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: The bound of a group's `priority` either way. The waiting line's order key is the join
#: time shifted by priority x PRIORITY_STEP seconds (fleet/lua/_line.lua); kept this small,
#: every key stays below 2**32 until about 2052, so a double still tells joins apart to about
#: one microsecond (a unix time alone does to a quarter of one).
MAX_PRIORITY = 100
Priority = Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]


class GroupRules(BaseModel):
    """What one group's members may use together: `max_sessions` at once, and
    `daily_gpu_hours` of GPU time over the last 24 hours (null: no limit); and where they
    stand in the waiting line: `priority`, higher served first (see `priority_of`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_sessions: PositiveCount | None = None
    daily_gpu_hours: GpuHours | None = None
    priority: Priority = 0


def session_limits(
    groups: Mapping[str, GroupRules], member_of: Iterable[str]
) -> tuple[tuple[str, int], ...]:
    """(group, max_sessions) of the groups `member_of` names that have one, sorted:
    what claim.lua is given (ARGV[9])."""
    return tuple(
        (name, most)
        for name in sorted(set(member_of))
        if name in groups and (most := groups[name].max_sessions) is not None
    )


def budgeted(groups: Mapping[str, GroupRules], member_of: Iterable[str]) -> dict[str, float]:
    """group -> daily_gpu_hours, for the groups `member_of` names that have a budget."""
    return {
        name: hours
        for name in sorted(set(member_of))
        if name in groups and (hours := groups[name].daily_gpu_hours) is not None
    }


def priority_of(groups: Mapping[str, GroupRules], member_of: Iterable[str]) -> int:
    """A person's place-in-line priority: the highest of the groups `member_of` names that
    groups: lists, 0 when it lists none of them (what claim.lua is given, ARGV[11]).

    A listed group with a negative priority puts its members behind everyone else only when
    no other listed group of theirs ranks higher.
    """
    listed = [groups[name].priority for name in set(member_of) if name in groups]
    return max(listed, default=0)
