"""What the console shows and the JSON API returns: one set of pydantic models for both.

The console renders these very objects, so a field the API documents is a
field the admin sees, and the OpenAPI document is generated from them.
Times are unix seconds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: What an API token may do: read = every GET; sessions = end sessions and logins;
#: fleet = pods and sizes; tokens = see the tokens (minting stays in the console).
Scope = Literal["read", "sessions", "fleet", "tokens"]
SCOPES: tuple[Scope, ...] = ("read", "sessions", "fleet", "tokens")


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
    allowed_groups: list[str] = Field(
        default_factory=list, description="only these groups may use it ([]: everyone let in)"
    )
    max_session_seconds: float | None = Field(
        None, description="a session ends this long after its claim, busy or not (null: never)"
    )
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
    node: str | None = Field(
        None, description="the node it runs on (Kubernetes, Agones; null: not known)"
    )
    gpu_slot: str | None = Field(
        None, description="the GPU slot it was given (the local backend's `gpus`; null: none)"
    )


class PodView(_Out):
    id: str
    profile: str
    state: str
    user: str
    created: float
    ready_at: float
    claimed_at: float
    node: str | None = Field(
        None, description="the node it runs on (Kubernetes, Agones; null: not known)"
    )
    gpu_slot: str | None = Field(
        None, description="the GPU slot it was given (the local backend's `gpus`; null: none)"
    )


class WaiterView(_Out):
    """One person in a profile's line, listed in serving order: `position` counts from the
    next one served; `priority` is the one they joined with (fleet.yaml's groups:)."""

    user: str
    profile: str
    position: int
    priority: int
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
    scope: str = Field(
        "admin", description="summary: admin (every scope), read (read only), else the scopes"
    )
    scopes: list[Scope] = Field(
        [], description="what it may do: read (GETs), sessions, fleet, tokens"
    )
    groups: list[str] = Field(
        [],
        description="its creator's groups when it was made: admin rights are re-checked on each use",
    )
    last_used: float | None = Field(None, description="unix time of its last accepted use")

    @model_validator(mode="before")
    @classmethod
    def _scopes_of_older_tokens(cls, data: Any) -> Any:
        """Tokens of an older broker carry only `scope`: admin meant every scope."""
        if isinstance(data, dict) and not data.get("scopes"):
            data = {**data, "scopes": ["read"] if data.get("scope") == "read" else list(SCOPES)}
        return data

    @property
    def owner(self) -> str:
        return self.by


class NewToken(TokenView):
    token: str = Field(description="shown once; only its hash is stored")


class Done(_Out):
    """The outcome of an action."""

    ok: bool
    detail: str


class UserView(_Out):
    """A person the broker has seen: from the activity index and the claims."""

    user: str
    last_seen: float | None = Field(description="unix time of their last real activity")
    session: SessionView | None = Field(description="their session now, if any")
    gpu_minutes: float = Field(
        0.0,
        description="GPU-minutes of the sessions the audit stream keeps (about a week) and of "
        "the session now, as GET /usage?by=user sums them",
    )
    blocked: bool = Field(False, description="blocked by an admin: no WebUI starts for them")


class UserPage(_Out):
    """One page of a listing; pass `next` back as `cursor` for the next, until it is null."""

    users: list[UserView]
    next: str | None


class EndedView(_Out):
    """A session's end, from the audit stream (kept ~10,000 entries)."""

    id: str = Field(description="the audit stream id; pass the last one back as `cursor`")
    at: float | None
    pod: str
    profile: str
    reason: str
    by: str
    detail: str


class EndedPage(_Out):
    sessions: list[EndedView]
    next: str | None
