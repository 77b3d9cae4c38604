"""Events between replicas over Redis pub/sub: one typed `Event`, its wire form, the listener.

Wire format, on the channel `keys.EVENTS`: the kind, then the fields its
`Kind` carries, separated by one space; the last field runs to the end (it may
hold spaces: a user id), the others never do (profile names are slugs).

    claim PROFILE USER     a pod was claimed for USER (claim.lua, bind.lua, reattach.lua)
    bound PROFILE USER     that claim is bound: USER may be sent to the pod (bound.lua)
    release PROFILE USER   USER's claim ended (end_pod.lua, drop_claim.lua, reattach.lua)
    queue PROFILE [USER]   the queue changed (claim.lua, drop_waiters.lua, FleetStore.join_queue)
    ready PROFILE POD      a warming pod became Ready (mark_ready.lua)
    rebuild                the index was rebuilt or repaired from the backend's records
    scale PROFILE          an admin changed a profile's sizes (autoscale.py)
    spec SHA               a fleet spec was stored (specstore.py)
    session-revoked SID [SID...]   login sessions ended (broker/auth/sessions.py)
    session-changed SID    a login session was read again from the provider

Lua scripts publish through `publish(EVENT.kind, profile, subject)`, a helper
fleet/scripts.py writes in front of every script from `lua_prelude()` here, so
both sides share this one definition. Observers are plain callables (or
objects with `on_event`) that must not block; a message that does not parse
(a newer replica's kind) is skipped. The listener is fleet/listener.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)


class Kind(StrEnum):
    CLAIM = "claim"
    BOUND = "bound"
    RELEASE = "release"
    QUEUE = "queue"
    READY = "ready"
    REBUILD = "rebuild"
    SCALE = "scale"
    SPEC = "spec"
    SESSION_REVOKED = "session-revoked"
    SESSION_CHANGED = "session-changed"
    #: Never on the wire: the listener (re)subscribed, so messages may have been missed.
    RECONNECT = "reconnect"


#: kind -> (carries a profile, subject required, subject allowed)
_LAYOUT: dict[Kind, tuple[bool, bool, bool]] = {
    Kind.CLAIM: (True, True, True),
    Kind.BOUND: (True, True, True),
    Kind.RELEASE: (True, True, True),
    Kind.QUEUE: (True, False, True),
    Kind.READY: (True, True, True),
    Kind.REBUILD: (False, False, False),
    Kind.SCALE: (True, False, False),
    Kind.SPEC: (False, True, True),
    Kind.SESSION_REVOKED: (False, True, True),
    Kind.SESSION_CHANGED: (False, True, True),
}
#: The kinds fleet/lua/*.lua publish (the Lua `EVENT` table holds only these).
LUA_KINDS = (Kind.CLAIM, Kind.BOUND, Kind.RELEASE, Kind.QUEUE, Kind.READY)


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    profile: str = ""
    subject: str = ""  # a user, a pod, a spec's sha, session ids: as `kind` says

    def encode(self) -> str:
        """The wire form; ValueError for an event that cannot be parsed back as itself."""
        layout = _LAYOUT.get(self.kind)
        if layout is None:
            raise ValueError(f"{self.kind} events are never published")
        has_profile, needs_subject, may_subject = layout
        if has_profile != bool(self.profile) or (has_profile and " " in self.profile):
            raise ValueError(f"bad profile {self.profile!r} for a {self.kind} event")
        if (needs_subject and not self.subject) or (self.subject and not may_subject):
            raise ValueError(f"bad subject {self.subject!r} for a {self.kind} event")
        return " ".join(part for part in (self.kind, self.profile, self.subject) if part)


def parse(message: str) -> Event | None:
    """The event a message encodes, or None (an unknown kind, a field missing)."""
    name, _, rest = message.partition(" ")
    try:
        kind = Kind(name)
    except ValueError:
        return None
    layout = _LAYOUT.get(kind)
    if layout is None:
        return None
    has_profile, needs_subject, may_subject = layout
    profile = ""
    if has_profile:
        profile, _, rest = rest.partition(" ")
        if not profile:
            return None
    if (needs_subject and not rest) or (rest and not may_subject):
        return None
    return Event(kind, profile, rest)


def lua_prelude() -> str:
    """Lua for the front of every script: the `EVENT` kinds and `publish`, which writes
    exactly `Event(...).encode()` (tests/test_events.py runs the scripts to check) on the
    channel `EVENTS`, which fleet/scripts.py defines before it."""
    kinds = ", ".join(f"{k.name.lower()} = '{k.value}'" for k in LUA_KINDS)
    return (
        f"local EVENT = {{{kinds}}} "
        "local function publish(kind, profile, subject) "
        "local message = assert(kind, 'unknown event kind') .. ' ' .. profile "
        "if subject and subject ~= '' then message = message .. ' ' .. subject end "
        "redis.call('PUBLISH', EVENTS, message) end"
    )


class Observer(Protocol):
    """Anything that hears every event: caches, waiters, metrics, the log."""

    def on_event(self, event: Event) -> None: ...


Handler = Callable[[Event], None]


class LogObserver:
    """Every event heard, at DEBUG: what one replica learnt from the others, and when."""

    def on_event(self, event: Event) -> None:
        log.debug("event %s %s %s", event.kind, event.profile, event.subject)
