"""The "session ended" notice a pod's death leaves for its user (keys.ended).

Every way a session ends must leave one (DESIGN.md, invariants): while it is
unread, a background request of the open tab gets 409 instead of claiming a
new pod, and only a page load (the ended page's button) starts a new session.
The reaper writes its own (reaper/policy.py, same fields); this is the one the
fleet writes when a WebUI dies under a user: the controller's pass and the
proxy's dead-pod path. The notice carries no detail of the pod (a log path, an
exit code): that goes to the audit stream, for admins.
"""

from __future__ import annotations

from .model import Ended
from .store import FleetStore

NOTICE_TTL = 7 * 86400.0  # an unread notice is kept this long (as reaper.policy's)
NODE_LOST = "node_lost"  # why a claim ends when its pod's node stopped answering


def ended_notice(ended: Ended, reason: str, now: float) -> dict[str, object]:
    """What the user's next visit says, in the reaper's notice fields."""
    session = max(0.0, now - ended.claimed_at) if ended.claimed_at else 0.0
    return {
        "reason": reason,
        "idle_minutes": 0,
        "session_minutes": round(session / 60),
        "idle_seconds": 0,
        "session_seconds": int(session),
        "pod": ended.pod,
        "profile": ended.profile,
        "at": now,
    }


async def tell_ended(
    store: FleetStore, ended: Ended, reason: str, detail: str, now: float, *, by: str
) -> None:
    """Audit an ended session and leave its user the notice, in one round trip."""
    event: dict[str, str | float | int] = {
        "user": ended.user,
        "pod": ended.pod,
        "profile": ended.profile,
        "reason": reason,
        "at": repr(now),
        "by": by,
    }
    if detail:
        event["detail"] = detail[:200]
    await store.record_reclaim(event, ended_notice(ended, reason, now), NOTICE_TTL)
