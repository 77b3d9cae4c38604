"""Plain records passed between the store, the backends and the broker."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


class PodState(enum.StrEnum):
    WARMING = "warming"
    READY = "ready"
    CLAIMED = "claimed"
    DELETING = "deleting"


class Phase(enum.StrEnum):
    """What the backend observes of a pod, independent of claims."""

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # will never become ready (crash, image pull error, OOM...)
    GONE = "gone"  # the process or pod no longer exists


@dataclass(slots=True)
class Claim:
    user: str
    pod: str
    profile: str
    addr: str
    since: float
    new: bool = False  # taken by this very call, not found existing
    binding: bool = False  # its claimer is still preparing the pod: send nobody yet
    waited: float = 0.0  # a new claim: seconds its user waited in line for it (0: a warm pod)
    #: The user's groups when the claim was made (kept on the claim: usage per group).
    groups: tuple[str, ...] = field(default=(), compare=False)
    #: A new claim: its pod's node and GPU slot, when known (the session_start line).
    node: str = field(default="", compare=False)
    slot: str = field(default="", compare=False)

    @classmethod
    def from_hash(cls, user: str, data: dict[str, str], *, new: bool = False) -> Claim:
        return cls(
            user=user,
            pod=data["pod"],
            profile=data["profile"],
            addr=data.get("addr", ""),
            since=float(data.get("since", 0)),
            new=new,
            binding=data.get("binding") == "1",
            groups=groups_of(data.get("groups", "")),
            node=data.get("node", ""),
            slot=data.get("slot", ""),
        )


def groups_text(groups: Iterable[str]) -> str:
    """Groups as the claim hash and the audit stream keep them: sorted JSON ("" = none),
    since a group name may hold any character (a comma, a space)."""
    names = sorted(set(groups))
    return json.dumps(names, separators=(",", ":")) if names else ""


def groups_of(text: str) -> tuple[str, ...]:
    """`groups_text` read back; anything else (a claim made before groups were kept) is none."""
    try:
        names = json.loads(text) if text else []
    except ValueError:
        return ()
    if not isinstance(names, list):
        return ()
    return tuple(n for n in names if isinstance(n, str))


#: The groups written on a pod's own record (a Kubernetes or GameServer annotation, the
#: local claim file) so that a claim rebuilt after a Redis loss keeps them (max_sessions,
#: usage by group). Bounded: Kubernetes caps all of an object's annotations at 256 KiB
#: together (apimachinery `pkg/api/validation/objectmeta.go`, TotalAnnotationSizeLimitB).
RECORD_GROUPS_BYTES = 8 * 1024
RECORD_GROUP_NAME = 256  # characters of one name kept on a record; a longer one is left off


def record_groups(groups: Iterable[str], first: Iterable[str] = ()) -> str:
    """`groups_text` of the groups a pod's record keeps, within RECORD_GROUPS_BYTES: the
    ones in `first` (fleet.yaml's groups: the limits) before the rest, so that a person in
    hundreds of groups still has their limited ones counted after a rebuild."""
    wanted = {g for g in groups if len(g) <= RECORD_GROUP_NAME}
    named = set(first)
    kept: list[str] = []
    size = 1  # the closing bracket; each name adds its JSON and a bracket or comma
    for name in sorted(wanted, key=lambda g: (g not in named, g)):
        size += len(json.dumps(name).encode()) + 1
        if size > RECORD_GROUPS_BYTES:
            break
        kept.append(name)
    return groups_text(kept)


def record_groups_of(text: str) -> tuple[str, ...]:
    """Groups read back from a pod's record, checked as `record_groups` writes them: an
    oversized or malformed value is no groups (the record still names its user)."""
    if len(text.encode()) > RECORD_GROUPS_BYTES:
        return ()
    return tuple(sorted({g for g in groups_of(text) if 0 < len(g) <= RECORD_GROUP_NAME}))


# --- what a claim can come to besides a Claim: one type per outcome, matched by callers ---


@dataclass(frozen=True, slots=True)
class Queued:
    """No pod free: the user's place in line (position 0: only looked, not in line)."""

    profile: str
    position: int
    queue_length: int


@dataclass(frozen=True, slots=True)
class Retry:
    """No pod to route to yet and no place in line: a bind failed, the pod is kept for the
    user while the platform does not answer, or another request is allocating. The user's
    next request claims again."""

    profile: str


@dataclass(frozen=True, slots=True)
class Rebuilding:
    """The index is being rebuilt from the backend (after a Redis loss): nobody claims now."""

    profile: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Refused (`unless_ended`): the user's session ended and they have not been told yet."""

    profile: str


@dataclass(frozen=True, slots=True)
class Allocate:
    """Reserve mode (backends that allocate): the user may have a pod now; allocate one."""

    profile: str
    queued_at: str = ""


@dataclass(frozen=True, slots=True)
class Limited:
    """Refused: a limit of one of the user's groups applies (fleet.yaml's groups:), so no new
    session now and no place in line (claim.lua says why). `kind` "sessions": `held` of the
    group's `limit` sessions are in use; "budget": `held` of its `limit` daily GPU-hours."""

    profile: str
    kind: str  # "sessions" or "budget"
    group: str
    limit: float
    held: float


@dataclass(frozen=True, slots=True)
class Blocked:
    """Refused: an admin blocked the user (fleet/store/blocks.py), found by the claim script
    itself, so a page that was waiting before the block claims nothing (out of line too)."""

    profile: str


Waiting = Queued | Retry | Rebuilding | SessionEnded | Limited | Blocked
"""Every outcome of a claim that has no pod to route to (`isinstance` takes it too)."""


def place_of(result: Waiting) -> tuple[int, int]:
    """(position, queue length) to show: (0, 0) for all but a place in line."""
    return (result.position, result.queue_length) if isinstance(result, Queued) else (0, 0)


@dataclass(slots=True)
class PodRecord:
    """A pod as its backend records it: the source of truth Redis is rebuilt from."""

    id: str
    profile: str
    phase: Phase
    addr: str = ""
    user: str = ""
    created: float = 0.0
    claimed_at: float = 0.0
    reason: str = ""  # why it is failed or still starting (ImagePullBackOff, Unschedulable...)
    terminating: bool = False  # deletion asked for and under way: do not ask again
    node_lost: bool = False  # its node stopped answering: out of reach, perhaps for good
    groups: tuple[str, ...] = ()  # its user's groups, as the claim wrote them (record_groups)
    extra: dict[str, str] = field(default_factory=dict)  # backend details kept in Redis


def http_address(host: str, port: int | str) -> str:
    """A pod's base URL (PodRecord.addr). An IPv6 address, as IPv6-only and dual-stack
    clusters give pods, goes in brackets (RFC 3986): `http://fd00::5:7860` is no URL."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(slots=True)
class PodInfo:
    """A pod as the Redis index knows it."""

    id: str
    profile: str
    state: PodState
    addr: str = ""
    user: str = ""
    created: float = 0.0
    ready_at: float = 0.0
    claimed_at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> PodInfo:
        known = {"id", "profile", "state", "addr", "user", "created", "ready_at", "claimed_at"}
        return cls(
            id=data["id"],
            profile=data.get("profile", ""),
            state=PodState(data.get("state", "warming")),
            addr=data.get("addr", ""),
            user=data.get("user", ""),
            created=float(data.get("created") or 0),
            ready_at=float(data.get("ready_at") or 0),
            claimed_at=float(data.get("claimed_at") or 0),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(slots=True)
class Ended:
    """A pod taken out of service by end_pod."""

    pod: str
    user: str
    profile: str
    claimed_at: float
    node: str = ""
    groups: tuple[str, ...] = ()
    slot: str = ""  # the local backend's GPU slot ("" elsewhere)


@dataclass(slots=True)
class Candidate:
    """A session a reclaim cycle must look at: idle too long, or past max_session.

    Read in one call (reap_candidates.lua) with what the cycle needs to decide
    without further reads: the claim, and the pod record it points to.
    """

    kind: str  # "idle", "expired" or "busy" (found generating last cycle, neither of the others)
    user: str
    last_activity: float | None  # None: no activity entry
    pod: str  # "" when the user has no claim any more
    profile: str
    since: float
    pod_state: str  # "" when the pod record is gone
    pod_user: str
    addr: str
    claimed_at: float
    strikes: int  # busy probes in a row that got no answer
    busy_pod: str = ""  # the pod the reaper last found generating for this user ("" none)

    FIELDS = 12

    @classmethod
    def from_flat(cls, values: list[str]) -> Candidate:
        kind, user, last, pod, profile, since, state, pod_user, addr, claimed_at, strikes, busy = (
            values
        )
        return cls(
            kind=kind,
            user=user,
            last_activity=float(last) if last else None,
            pod=pod,
            profile=profile,
            since=float(since or 0),
            pod_state=state,
            pod_user=pod_user,
            addr=addr,
            claimed_at=float(claimed_at or 0),
            strikes=int(strikes or 0),
            busy_pod=busy,
        )

    @property
    def was_busy(self) -> bool:
        """The reaper found this very session generating at its last look."""
        return bool(self.pod) and self.busy_pod == self.pod

    @property
    def pod_exists(self) -> bool:
        """The claim points at a live pod record that serves this very user."""
        live = self.pod_state not in ("", "deleting")
        return bool(self.pod) and live and self.pod_user == self.user
