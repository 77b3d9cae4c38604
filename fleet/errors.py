"""One root error for the fleet; backends translate their clients' errors into it."""

from __future__ import annotations


class FleetError(Exception):
    """Anything the fleet could not do; the message is safe to show an admin."""


class BackendError(FleetError):
    """The backend (processes, Kubernetes API, Agones) refused or failed."""


class PodGone(BackendError):
    """The pod no longer exists."""


class Conflict(BackendError):
    """Someone else changed the object first (optimistic concurrency)."""


class StoreUnavailable(FleetError):
    """Redis cannot be reached."""
