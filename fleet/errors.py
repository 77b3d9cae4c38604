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


class Unavailable(BackendError):
    """The platform's API was busy or out of reach (429, 5xx, a timeout, no route).

    Says nothing about the pod: it may be perfectly healthy, so nobody ends it
    for this. `retry_after` is the server's Retry-After in seconds, if it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(FleetError):
    """Redis cannot be reached."""
