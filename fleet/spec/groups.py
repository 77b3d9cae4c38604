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


class GroupRules(BaseModel):
    """What one group's members may use together: `max_sessions` at once, and
    `daily_gpu_hours` of GPU time over the last 24 hours (null: no limit)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_sessions: PositiveCount | None = None
    daily_gpu_hours: GpuHours | None = None


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
