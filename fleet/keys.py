"""Every Redis key sdbroker uses, built in one place.

Nobody else spells a key: change the layout here and every caller follows.
All keys share one prefix so a shared Redis can host several installations.
"""

from __future__ import annotations

PREFIX = "sdb:"

#: Set once the index has been built from the backend's records; missing after
#: a FLUSHALL or a lost Redis, which makes claims wait ("rebuilding") instead of
#: guessing.
STATE_MARKER = PREFIX + "state"
#: Counter the leading controller increments on every full pass and remembers. Redis
#: answering an older value (or none) lost writes: a failover to a replica that was
#: behind (Memorystore Standard replicates asynchronously), or a restore from a backup;
#: the controller then repairs the index from the pods' records (fleet/reconcile.py).
EPOCH = PREFIX + "epoch"
#: The layout version of every key here (fleet/schema.py): a broker refuses a Redis
#: written in a layout it does not know.
SCHEMA = PREFIX + "schema"
#: Pub/sub channel for claim/release/rebuild/spec events between replicas.
EVENTS = PREFIX + "events"
#: Sorted set user -> last real activity (unix seconds).
ACTIVITY = PREFIX + "activity"
#: Hash user -> pod of sessions whose WebUI the reaper last found generating. The
#: reaper probes these every cycle (not only once idle), so the end of a generation
#: is seen within one cycle and idle time counts from it.
BUSY = PREFIX + "busy"
#: Pods whose deletion through the backend is pending.
DELETING = PREFIX + "deleting"
#: Capped stream of reclaim events.
AUDIT = PREFIX + "audit"
#: Hash component -> unix time it last ran (fleet/heartbeats.py: controller_leader,
#: controller_pass, reaper), exported as sdbroker_heartbeat_timestamp_seconds.
HEARTBEATS = PREFIX + "heartbeats"
#: Hash "PROFILE<TAB>REASON" -> sessions ended (store.end_pod counts every one, a
#: CronJob reaper's included), exported as sdbroker_sessions_ended_total.
SESSION_ENDS = PREFIX + "session-ends"
#: Leader locks.
CONTROLLER_LEADER = PREFIX + "leader:controller"
REAPER_LEADER = PREFIX + "leader:reaper"
#: Applied fleet spec (text), written by `sdbroker fleet apply`.
SPEC = PREFIX + "spec"
#: Hash: where the applied spec came from (source=file|apply, sha, at, by).
SPEC_META = PREFIX + "spec-meta"
#: Hash: SHA-256 of an admin API token -> JSON (id, name, created, by); never the token.
API_TOKENS = PREFIX + "api-tokens"
#: Hash: SHA-256 of an admin API token -> unix time it was last used.
API_TOKENS_USED = PREFIX + "api-tokens-used"
#: Tab presence (fleet/store/presence.py): sorted set broker process -> unix time its
#: counts expire (each process rewrites them every beat; a killed one's lapse), with
#: each process's hash user -> open tab connections under PRESENCE_PREFIX + process, and
#: GONE: sorted set user -> when their last tab connection closed (reclaim_when_gone).
#: Additive: a broker that knows none of them reads and writes the rest as before.
#: Set of users an admin blocked from WebUIs (fleet/store/blocks.py). Additive.
BLOCKED = PREFIX + "blocked"
PRESENCE_PROCS = PREFIX + "presence-procs"
PRESENCE_PREFIX = PREFIX + "presence:"
GONE = PREFIX + "gone"
POD_PREFIX = PREFIX + "pod:"
CLAIM_PREFIX = PREFIX + "claim:"


def pod(pod_id: str) -> str:
    """Hash: id, profile, state, addr, user, created, ready_at, claimed_at..."""
    return POD_PREFIX + pod_id


def presence(process: str) -> str:
    """Hash user -> tab connections open on one broker process (keys.PRESENCE_PROCS)."""
    return PRESENCE_PREFIX + process


def claim(user: str) -> str:
    """Hash: pod, profile, addr, since."""
    return CLAIM_PREFIX + user


def group_holders(group: str) -> str:
    """Set of the users holding a claim who were in `group` when they claimed (written by
    _write_claim.lua, emptied by end_pod.lua and drop_claim.lua): what a group's
    max_sessions counts (fleet/lua/_groups.lua)."""
    return f"{PREFIX}group-holders:{group}"


def warming(profile: str) -> str:
    """Sorted set of starting pods, scored by creation time."""
    return f"{PREFIX}warming:{profile}"


def ready(profile: str) -> str:
    """Sorted set of Ready unclaimed pods, scored by ready time (oldest first out)."""
    return f"{PREFIX}ready:{profile}"


def claimed(profile: str) -> str:
    """Sorted set of claimed pods, scored by claim time."""
    return f"{PREFIX}claimed:{profile}"


def queue(profile: str) -> str:
    """Sorted set user -> time they joined the waiting queue (the line's order: queue_order)."""
    return f"{PREFIX}queue:{profile}"


def queue_order(profile: str) -> str:
    """Sorted set user -> place in the waiting line: the same users as `queue`, scored by join
    time minus priority x PRIORITY_STEP (fleet/lua/_line.lua), so the line is served by
    (priority desc, join time asc) while `queue` keeps the plain join time for everyone
    who reads it (the wait metric, the console, bind.lua's queued_at). Additive: a broker
    that knows only `queue` writes no entry here; the controller's pass adds it
    (drop_waiters.lua)."""
    return f"{PREFIX}queue-order:{profile}"


def queue_seen(profile: str) -> str:
    """Sorted set user -> last time a waiting user showed they are still there."""
    return f"{PREFIX}queue-seen:{profile}"


def allocating(user: str) -> str:
    """String (short TTL): one broker is allocating a pod for this user (Agones); others wait."""
    return f"{PREFIX}allocating:{user}"


def ended(user: str) -> str:
    """String: JSON notice of a session that ended, shown on the user's next visit."""
    return f"{PREFIX}ended:{user}"


def session(ticket_hash: str) -> str:
    """Hash: a server-side login session (oidc), keyed by the hash of its ticket."""
    return f"{PREFIX}session:{ticket_hash}"


def user_sessions(user: str) -> str:
    """Set of a user's session ticket hashes, so an admin can revoke them all."""
    return f"{PREFIX}user-sessions:{user}"


def login(state_hash: str) -> str:
    """String: a login in progress (oidc), keyed by the hash of its state; used once."""
    return f"{PREFIX}login:{state_hash}"


def login_starts(client: str) -> str:
    """Counter: logins a client address started in the last LOGIN_TTL (oidc)."""
    return f"{PREFIX}login-starts:{client}"


def profile_choice(user: str) -> str:
    """String: the profile a user chose last time."""
    return f"{PREFIX}choice:{user}"


def pod_states(profile: str) -> tuple[str, str, str]:
    """The three state sets of a profile, in lifecycle order."""
    return warming(profile), ready(profile), claimed(profile)


def override(profile: str) -> str:
    """Hash: an admin's runtime sizes of a profile (buffer/min/max, at, by) until the next
    schedule change."""
    return f"{PREFIX}override:{profile}"


def history(profile: str) -> str:
    """List of "time warming ready claimed queue" samples, newest first, capped."""
    return f"{PREFIX}history:{profile}"


def starts(profile: str) -> str:
    """List of recent pod start durations (seconds), newest first, capped."""
    return f"{PREFIX}starts:{profile}"


def start_failures(profile: str) -> str:
    """Hash: failed pod starts in a row (`in_row`), the last one's `reason`, `error` and `at`;
    a pod becoming Ready sets `in_row` to 0 (fleet/start_health.py)."""
    return f"{PREFIX}start-failures:{profile}"
