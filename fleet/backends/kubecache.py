"""The objects of one watch, kept as the API server last showed them, and our own writes.

resourceVersion is opaque: clients may compare two for equality, never for
order (Kubernetes API conventions, "Concurrency Control and Consistency";
client-go's reflector and informers only ever pass it back). What orders
events is the watch itself: they come in the order they happened. So when
we put the answer to one of our writes into the cache at once (so that no
reconcile can act on the copy before it), a watch event for that object is
older than the write until the watch delivers the write's own version;
and if the watch delivered that version already, the written copy is old.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
SEEN = 16  # versions remembered per object: how far the watch may run ahead of a write's answer
OWN_WRITE_HOLD = 10.0  # seconds a written copy may hide the watch's at most (a lost event)


def version_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class ObjectCache:
    def __init__(self, on_change: Callable[[str, Obj], None]) -> None:
        self.on_change = on_change
        self.objects: dict[str, Obj] = {}
        self._seen: dict[str, deque[str]] = {}  # versions the watch delivered, per object
        self._written: dict[str, tuple[str, float]] = {}  # name -> (version we wrote, hold until)
        self._held: dict[str, tuple[str, Obj]] = {}  # the watch's latest, hidden by a write

    def replace(self, fresh: dict[str, Obj]) -> None:
        """A relist: the API server's whole truth, newer than any write made before it."""
        gone = set(self.objects) - set(fresh)
        self.objects = fresh
        self._seen = {name: deque([version_of(o)], maxlen=SEEN) for name, o in fresh.items()}
        self._written.clear()
        self._held.clear()
        for name in gone:
            self.on_change("DELETED", {"metadata": {"name": name}})
        for obj in fresh.values():
            self.on_change("SYNC", obj)

    def apply(self, kind: str, obj: Obj) -> None:
        """Record the answer to one of our own writes, so the cache never lags it."""
        name = self._still_there(kind, obj)
        if not name:
            return
        version = version_of(obj)
        seen = self._seen.get(name, ())
        if version and version in seen:
            return  # the watch delivered this version already, and perhaps newer ones
        previous = self.objects.get(name)
        self.objects[name] = obj
        if version:
            self._written[name] = (version, time.monotonic() + OWN_WRITE_HOLD)
            if previous is not None and version_of(previous) in seen:
                self._held[name] = ("MODIFIED", previous)  # the watch's view, should ours be lost
        self.on_change(kind, obj)

    def event(self, kind: str, obj: Obj) -> None:
        """Record one watch event."""
        name = self._still_there(kind, obj)
        if not name:
            return
        version = version_of(obj)
        self._seen.setdefault(name, deque(maxlen=SEEN)).append(version)
        written = self._written.get(name)
        if written is not None and written[0] != version and time.monotonic() < written[1]:
            self._held[name] = (kind, obj)  # from before our write: ours is newer
            return
        self._written.pop(name, None)
        self._held.pop(name, None)
        self.objects[name] = obj
        self.on_change(kind, obj)

    def expire(self) -> None:
        """Written copies held past OWN_WRITE_HOLD give way to what the watch showed last.

        A write's own event always comes unless the watch breaks (then a resume
        replays it, or a relist replaces everything): this is only a backstop.
        """
        now = time.monotonic()
        for name, (_, until) in list(self._written.items()):
            if now >= until:
                del self._written[name]
                held = self._held.pop(name, None)
                if held is not None:
                    self.objects[name] = held[1]
                    self.on_change(*held)

    def _still_there(self, kind: str, obj: Obj) -> str:
        """The object's name if it is to be stored; "" if it has no name or was deleted
        (a deletion, from a watch or our own write, is recorded here and then)."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        if name and kind == "DELETED":
            self._deleted(name, obj)
            return ""
        return name

    def _deleted(self, name: str, obj: Obj) -> None:
        self.objects.pop(name, None)
        self._seen.pop(name, None)
        self._written.pop(name, None)
        self._held.pop(name, None)
        self.on_change("DELETED", obj)
