"""The reaper's Prometheus metrics, in the default registry (the broker's /metrics serves it)."""

from __future__ import annotations

from prometheus_client import Counter

from .policy import Reason

RECLAIMS = Counter(
    "sdbroker_reclaims",
    "Sessions ended and their GPU given back, by profile and reason (idle, gone, "
    "max_session, dead, admin, stopped).",
    ["profile", "reason"],
)


def reclaims_at_zero(profiles: list[str]) -> None:
    """Every profile's reasons show up at 0 (a broker calls this with its spec's profiles
    at each scrape), so rate() works from the start; the profiles are known only then."""
    for profile in profiles:
        for reason in Reason:
            RECLAIMS.labels(profile, str(reason))


def count_reclaim(user: str, pod: str, profile: str, reason: str, idle_seconds: float) -> None:
    """Count a session another part of the fleet ended (the controller's `on_reclaim` hook)."""
    if reason in Reason.__members__.values():
        RECLAIMS.labels(profile, reason).inc()
