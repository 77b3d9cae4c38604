"""The reaper's Prometheus metrics, in the default registry (the broker's /metrics serves it)."""

from __future__ import annotations

from prometheus_client import Counter

from .policy import Reason

RECLAIMS = Counter(
    "sdbroker_reclaims",
    "Sessions ended and their GPU given back, by reason (idle, max_session, dead, admin, stopped).",
    ["reason"],
)
for _reason in Reason:  # every reason shows up at 0, so rate() works from the start
    RECLAIMS.labels(str(_reason))


def count_reclaim(user: str, pod: str, reason: str, idle_seconds: float) -> None:
    """Count a session another part of the fleet ended (the controller's `on_reclaim` hook)."""
    if reason in Reason.__members__.values():
        RECLAIMS.labels(reason).inc()
