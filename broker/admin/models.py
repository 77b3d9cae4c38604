"""What the console shows and the JSON API returns: one set of pydantic models for both.

The console renders these very objects, so a field the API documents is a
field the admin sees, and the OpenAPI document is generated from them.
Times are unix seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Sizes(_Out):
    """A profile's sizing: pods = claimed + buffer, clamped to [min, max]."""

    min: int
    buffer: int | str = Field(description='a count, or "N%" of claimed pods')
    max: int


class OverrideView(_Out):
    """An admin's runtime sizes ("for now"); the next schedule change replaces them."""

    min: int | None
    buffer: int | str | None
    max: int | None
    at: float
    by: str


class ProfileView(_Out):
    name: str
    display_name: str
    gpu: str | None
    warming: int
    ready: int
    claimed: int
    deleting: int
    queue: int
    sizes: Sizes = Field(description="in force now (file, then schedule, then override)")
    file: Sizes = Field(description="as written in fleet.yaml")
    schedule_entry: int | None = Field(description="index of the schedule entry in force")
    scheduled_since: float | None
    override: OverrideView | None
    next_change_at: float | None
    next_change: Sizes | None = Field(description="sizes from the next schedule change")
    typical_start_seconds: float | None = Field(description="median of recent pod starts")
    start_failures_in_row: int = Field(
        0, description="failed pod starts since a pod of this profile last became Ready"
    )
    failing: bool = Field(
        False, description="starts keep failing: waiting users are told to choose another kind"
    )
    last_start_error: str | None = Field(
        None, description="why the last failed start failed (kept after a later success)"
    )
    last_start_failure_at: float | None = None


class SessionView(_Out):
    user: str
    pod: str
    profile: str
    since: float
    age_seconds: float
    last_activity: float | None
    idle_seconds: float | None
    busy: bool | None = Field(description="the WebUI is generating (None: not asked or no answer)")


class PodView(_Out):
    id: str
    profile: str
    state: str
    user: str
    created: float
    ready_at: float
    claimed_at: float


class WaiterView(_Out):
    user: str
    profile: str
    position: int
    joined: float
    waiting_seconds: float
    seen_seconds_ago: float


class AuditView(_Out):
    id: str
    at: float | None
    user: str
    pod: str
    profile: str
    reason: str
    by: str
    detail: str


class SampleView(_Out):
    at: float
    warming: int
    ready: int
    claimed: int
    queue: int


class HistoryView(_Out):
    profile: str
    samples: list[SampleView]


class TokenView(_Out):
    id: str
    name: str
    created: float
    by: str
    expires: float = Field(
        0.0,
        description="seconds since the epoch; 0: a token of an older broker, created + SDB_API_TOKEN_TTL",
    )
    scope: Literal["read", "admin"] = Field("admin", description="read: GET only")
    groups: list[str] = Field(
        [],
        description="its creator's groups when it was made: admin rights are re-checked on each use",
    )


class NewToken(TokenView):
    token: str = Field(description="shown once; only its hash is stored")


class Done(_Out):
    """The outcome of an action."""

    ok: bool
    detail: str
