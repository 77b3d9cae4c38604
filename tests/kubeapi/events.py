"""core/v1 Events, as the scheduler, kubelet and Agones controllers record them."""

from __future__ import annotations

from typing import Any

from .clock import rfc3339
from .resources import EVENTS
from .store import Store


class EventRecorder:
    """Writes Events; a repeat of the same reason+message on an object bumps `count`."""

    def __init__(
        self, store: Store, *, enabled: bool = True, max_per_namespace: int = 1000
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.max_per_namespace = max_per_namespace
        self._seen: dict[tuple[str, str, str], str] = {}  # (uid, reason, message) -> event name
        self._keys: dict[str, tuple[str, str, str]] = {}
        self._order: dict[str, list[str]] = {}

    def record(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "kubelet",
        host: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        now = rfc3339(self.store.clock.time())
        key = (meta.get("uid", ""), reason, message)
        existing = self._seen.get(key)
        if existing and self.store.peek(EVENTS, ns, existing) is not None:

            def bump(event: dict[str, Any]) -> None:
                event["count"] = event.get("count", 1) + 1
                event["lastTimestamp"] = now

            self.store.mutate(EVENTS, ns, existing, bump)
            return
        source = {"component": component, **({"host": host} if host else {})}
        event = self.store.create(
            EVENTS,
            ns,
            {
                "metadata": {"generateName": f"{meta['name']}."},
                "involvedObject": {
                    "kind": obj.get("kind"),
                    "namespace": ns,
                    "name": meta["name"],
                    "uid": meta.get("uid"),
                    "apiVersion": obj.get("apiVersion"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": type,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host or "",
            },
        )
        name = event["metadata"]["name"]
        self._seen[key] = name
        self._keys[name] = key
        order = self._order.setdefault(ns, [])
        order.append(name)
        while len(order) > self.max_per_namespace:
            old = order.pop(0)
            self._seen.pop(self._keys.pop(old, ("", "", "")), None)
            if self.store.peek(EVENTS, ns, old) is not None:
                self.store.remove(EVENTS, ns, old)
