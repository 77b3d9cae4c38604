"""What ending a user's session leaves behind: the notice and the audit entry.

Every way a session ends must leave the user a notice (keys.ended; DESIGN.md,
invariants): while it is unread, a background request of the open tab gets
409 instead of claiming a new pod, and only a page load (the ended page's
button) starts a new session. end_pod.lua writes it, with the audit entry, in
the same script that ends the claim, when given a `Tell`: written a round trip
later, it let a poll between the two claim a new pod unseen (issue 17). The
notice carries no detail of the pod (a log path, an exit code): that goes to
the audit stream, for admins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

NOTICE_TTL = 7 * 86400.0  # an unread notice is kept this long
NODE_LOST = "node_lost"  # why a claim ends when its pod's node stopped answering


@dataclass(frozen=True, slots=True)
class Tell:
    """Who ended a session and what the user is told (end_pod's `tell`)."""

    by: str  # "reaper", "controller", "proxy", ...
    detail: str = ""  # for the audit entry only (cut to 200 characters)
    limit: float | None = None  # the max_session reached, for "its 12-hour limit"
    notice_ttl: float = NOTICE_TTL

    def encode(self, audit_maxlen: int) -> str:
        """end_pod.lua's ARGV[7]."""
        tell: dict[str, object] = {
            "by": self.by,
            "detail": self.detail[:200],
            "ttl": max(1, int(self.notice_ttl)),
            "maxlen": audit_maxlen,
        }
        if self.limit is not None:
            tell["limit_seconds"] = int(self.limit)
        return json.dumps(tell)
