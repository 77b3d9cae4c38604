"""Request bodies of the admin API (responses are the console's models in broker.admin.models)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    """Closed: a misspelt field is a 422, not a silently ignored change."""

    model_config = ConfigDict(extra="forbid")


class SizeChange(_In):
    """A profile's sizes for now; omitted fields keep their scheduled value."""

    min: int | None = Field(None, ge=0)
    buffer: int | str | None = Field(None, description='a count, or "N%" of claimed pods')
    max: int | None = Field(None, ge=1)


class Problem(BaseModel):
    """Every error: what went wrong, and what to do about it."""

    error: str
    detail: str


class StartSession(_In):
    """Which kind of pod to claim; omitted: the user's last choice, else the first profile."""

    profile: str | None = Field(None, max_length=64)
