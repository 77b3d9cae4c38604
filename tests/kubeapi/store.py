"""Objects, resourceVersions, change history and watchers: the simulator's etcd + watch cache.

One global resourceVersion counter (like etcd's revision) stamps every write.
Each resource keeps a bounded history of changes; a watch that starts from a
resourceVersion older than that history gets 410 Expired, as from a real
apiserver whose watch cache has moved on. Everything here is synchronous and
runs on the event loop, so one store call is one atomic step.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .clock import Clock, rfc3339
from .resources import NAMESPACES, Resource
from .selectors import FieldSelector, LabelSelector

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what apiserver's generateName uses
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@dataclass
class Change:
    """One write, as the watch cache remembers it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None = None
    _json: str | None = field(default=None, repr=False)

    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.obj, separators=(",", ":"))
        return self._json


@dataclass(eq=False)
class Watcher:
    """An open watch: changes that pass its filters queue up until the HTTP layer sends them."""

    resource: Resource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    pending: deque[tuple[str, str]] = field(default_factory=deque)  # (type, object JSON)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    abrupt: bool = False

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, change: Change) -> None:
        now, before = self.matches(change.obj), self.matches(change.prev)
        if change.type == "MODIFIED":
            # An object that starts or stops matching the selector is ADDED / DELETED for this watch.
            kind = {(True, True): "MODIFIED", (True, False): "ADDED", (False, True): "DELETED"}
            event = kind.get((now, before))
        else:
            event = change.type if now else None
        if event:
            self.pending.append((event, change.json()))
            self.wake.set()

    def close(self, abrupt: bool = False) -> None:
        self.closed, self.abrupt = True, abrupt
        self.wake.set()

    def take(self) -> list[tuple[str, str]]:
        items = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return items


class Store:
    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        *,
        history_size: int = 1000,
        first_rv: int = 1000,
        check: Callable[[Resource, Obj], None] | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.check = check  # every object as it is about to be kept: raises to refuse it
        self.history_size = history_size
        self._rv = first_rv
        self._objects: dict[Resource, dict[Key, Obj]] = {}
        self._history: dict[Resource, deque[Change]] = {}
        self._compacted: dict[Resource, int] = {}
        self._watchers: dict[Resource, set[Watcher]] = {}
        self._subscribers: dict[Resource, list[Callable[[Change], None]]] = {}

    # --- reading ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def peek(self, res: Resource, ns: str | None, name: str) -> Obj | None:
        """The stored object itself (do not modify), or None."""
        return self._objects.get(res, {}).get((ns or "", name))

    def get(self, res: Resource, ns: str | None, name: str) -> Obj:
        obj = self.peek(res, ns, name)
        if obj is None:
            raise errors.not_found(res.plural, res.group, name)
        return clone(obj)

    def iter(self, res: Resource, ns: str | None = None) -> Iterator[Obj]:
        """Stored objects (do not modify), in namespace/name order."""
        objects = self._objects.get(res, {})
        for key in sorted(objects):
            if ns is None or key[0] == ns:
                yield objects[key]

    def list(
        self,
        res: Resource,
        ns: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> tuple[list[Obj], int]:
        """Matching stored objects (do not modify) and the current resourceVersion."""
        labels, fields = labels or LabelSelector(), fields or FieldSelector()
        items = [
            o
            for o in self.iter(res, ns)
            if labels.matches(o["metadata"].get("labels")) and fields.matches(o)
        ]
        return items, self._rv

    # --- writing ---------------------------------------------------------------------------

    def create(self, res: Resource, ns: str | None, obj: Obj) -> Obj:
        """Store a copy of `obj`; returns the stored object (do not modify)."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
            self._ensure_namespace(ns or "default")
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    res.kind, "", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = self._generate_name(res, ns, prefix)
        validate_metadata(res, meta)
        key = _key(res, ns, meta["name"])
        if key in self._objects.setdefault(res, {}):
            raise errors.already_exists(res.plural, res.group, meta["name"])
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        meta["creationTimestamp"] = rfc3339(self.clock.time())
        meta.pop("deletionTimestamp", None)
        meta["resourceVersion"] = str(self._next_rv())
        if self.check is not None:
            self.check(res, obj)
        self._objects[res][key] = obj
        self._record(res, Change(self._rv, "ADDED", obj))
        return obj

    def update(self, res: Resource, ns: str | None, name: str, new: Obj) -> Obj:
        """Write a copy of `new` as the next version; returns the stored object (do not modify).

        A write that changes nothing keeps the version and sends no event, as etcd does.
        """
        return self._commit(res, ns, name, clone(new))

    def _commit(self, res: Resource, ns: str | None, name: str, new: Obj) -> Obj:
        old = self.peek(res, ns, name)
        if old is None:
            raise errors.not_found(res.plural, res.group, name)
        meta = new.setdefault("metadata", {})
        for fixed in ("name", "namespace", "uid", "creationTimestamp"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old
        validate_metadata(res, meta)
        meta["resourceVersion"] = str(self._next_rv())
        if self.check is not None:
            self.check(res, new)
        self._objects[res][_key(res, ns, name)] = new
        self._record(res, Change(self._rv, "MODIFIED", new, old))
        return new

    def mutate(
        self, res: Resource, ns: str | None, name: str, fn: Callable[[Obj], None]
    ) -> Obj | None:
        """Apply `fn` to a copy of the object and write it (None if the object is gone)."""
        current = self.peek(res, ns, name)
        if current is None:
            return None
        draft = clone(current)
        fn(draft)
        return self._commit(res, ns, name, draft)

    def remove(self, res: Resource, ns: str | None, name: str) -> Obj:
        obj = self._objects.get(res, {}).pop(_key(res, ns, name), None)
        if obj is None:
            raise errors.not_found(res.plural, res.group, name)
        final = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._next_rv())}}
        self._record(res, Change(self._rv, "DELETED", final, obj))
        return final

    # --- watching --------------------------------------------------------------------------

    def watch(
        self,
        res: Resource,
        ns: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        since: int | None,
    ) -> Watcher:
        """Open a watch. `since=None` starts with an ADDED for every current object."""
        watcher = Watcher(res, ns, labels, fields)
        if since is None:
            for obj in self.iter(res, ns):
                if watcher.matches(obj):
                    watcher.pending.append(("ADDED", json.dumps(obj, separators=(",", ":"))))
        else:
            compacted = self._compacted.get(res, 0)
            if since < compacted:
                history = self._history.get(res)
                raise errors.expired(since, history[0].rv if history else self._rv)
            for change in self._history.get(res, ()):
                if change.rv > since:
                    watcher.offer(change)
        if watcher.pending:
            watcher.wake.set()
        self._watchers.setdefault(res, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.resource, set()).discard(watcher)

    def watchers(self) -> list[Watcher]:
        return [w for ws in self._watchers.values() for w in ws]

    def subscribe(self, res: Resource, callback: Callable[[Change], None]) -> None:
        """In-process controllers: `callback(change)` runs soon after every write to `res`."""
        self._subscribers.setdefault(res, []).append(callback)

    def compact(self, res: Resource | None = None) -> None:
        """Forget history: every resourceVersion issued so far becomes too old to watch from."""
        for r in [res] if res else list(self._history):
            self._history[r] = deque(maxlen=self.history_size)
            self._compacted[r] = self._rv + 1

    # --- internals -------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, res: Resource, change: Change) -> None:
        history = self._history.setdefault(res, deque(maxlen=self.history_size))
        if len(history) == history.maxlen:
            self._compacted[res] = history[0].rv
        history.append(change)
        for watcher in self._watchers.get(res, ()):
            watcher.offer(change)
        subscribers = self._subscribers.get(res)
        if subscribers:
            loop = asyncio.get_running_loop()
            for callback in subscribers:
                loop.call_soon(callback, change)

    def _ensure_namespace(self, ns: str) -> None:
        if (("", ns)) not in self._objects.setdefault(NAMESPACES, {}):
            self.create(
                NAMESPACES,
                None,
                {
                    "metadata": {"name": ns},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    def _generate_name(self, res: Resource, ns: str | None, prefix: str) -> str:
        existing = self._objects.setdefault(res, {})
        while True:
            name = prefix[:58] + "".join(self.rng.choice(NAME_ALPHABET) for _ in range(5))
            if _key(res, ns, name) not in existing:
                return name


def clone(obj: Any) -> Any:
    """A deep copy of JSON-shaped data (several times faster than copy.deepcopy)."""
    if type(obj) is dict:
        return {k: clone(v) for k, v in obj.items()}
    if type(obj) is list:
        return [clone(v) for v in obj]
    return obj


def _key(res: Resource, ns: str | None, name: str) -> Key:
    return ((ns or "") if res.namespaced else "", name)


def validate_metadata(res: Resource, meta: Obj) -> None:
    """The checks the apiserver makes on every write: a DNS-1123 name, valid label keys/values."""
    name = meta.get("name", "")
    if len(name) > 253 or not _NAME_RE.match(name):
        raise errors.invalid(
            res.kind,
            name,
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
            "of lower case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character",
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (
            not _LABEL_NAME_RE.match(label)
            or len(label) > 63
            or (prefix and not _NAME_RE.match(prefix))
        ):
            raise errors.invalid(
                res.kind,
                name,
                f'metadata.labels: Invalid value: "{key}": name part must be a valid label name',
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE_RE.match(value):
            raise errors.invalid(
                res.kind,
                name,
                f'metadata.labels: Invalid value: "{value}": a valid label must be an empty string '
                "or consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character",
            )
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            raise errors.bad_request(
                f"json: cannot unmarshal {type(value).__name__} into Go struct field ObjectMeta.metadata.annotations of type string (key {key!r})"
            )


def check_preconditions(
    obj: dict[str, Any], pre: dict[str, Any] | None, plural: str, group: str
) -> None:
    meta, name = obj["metadata"], obj["metadata"]["name"]
    if pre and pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.precondition_failed(
            plural,
            group,
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
        )
    if pre and pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise errors.precondition_failed(
            plural,
            group,
            name,
            f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
            f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
        )
