"""The fleet's Redis index, one module per concern; `FleetStore` is all of them.

Every state change that must not race is one Lua call (fleet/lua/); reads are
plain commands, pipelined. Callers hold one `FleetStore` and see one object:
claims (claims.py), the waiting queue (queue.py), the pod index (pods.py), its
rebuilding from the backend (rebuild.py), activity (activity.py), the reaper's
reads (reaping.py), "session ended" notices (notices.py), the audit stream
(audit.py), tab presence (presence.py) and people blocked by an admin (blocks.py). A Redis out of reach is
`StoreUnavailable` (fleet.redis_boundary).
"""

from __future__ import annotations

from .activity import ActivityStore
from .audit import AUDIT_MAXLEN, AuditStore
from .base import Clock
from .blocks import BlockStore
from .claims import ClaimStore
from .notices import NoticeStore
from .pods import PodStore
from .presence import PresenceStore
from .queue import QueueStore
from .reaping import ReapStore
from .rebuild import RebuildStore


class FleetStore(
    ClaimStore,
    QueueStore,
    PodStore,
    RebuildStore,
    ActivityStore,
    ReapStore,
    NoticeStore,
    AuditStore,
    PresenceStore,
    BlockStore,
):
    """Redis state of the fleet. Constructing it does no I/O."""


__all__ = ["AUDIT_MAXLEN", "Clock", "FleetStore"]
