"""One shared list+watch per namespace and kind, kept as a cache of raw objects.

Everything the backends need to observe (pods, GameServers) comes from this
cache: no API call per pod, no polling. The watch resumes from the last
resourceVersion (bookmarks keep it fresh), relists on 410 Gone, and
reconnects with backoff when the API server drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ..spec import FleetSpec
from .base import Backend
from .kubeclient import api_client, read_json

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ListCall = Callable[..., Awaitable[Any]]
WATCH_SECONDS = (
    240  # server-side timeout: the watch is renewed (from its resourceVersion) this often
)


class ObjectWatch:
    def __init__(
        self,
        list_call: ListCall,
        *args: Any,
        label_selector: str,
        on_change: Callable[[str, Obj], None],
    ) -> None:
        self.list_call = list_call
        self.args = args
        self.label_selector = label_selector
        self.on_change = on_change
        self.objects: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch:{self.args}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def relist(self) -> str:
        body = await read_json(
            await self.list_call(
                *self.args, label_selector=self.label_selector, _preload_content=False
            )
        )
        fresh = {o["metadata"]["name"]: o for o in body.get("items", [])}
        gone = set(self.objects) - set(fresh)
        self.objects = fresh
        for name in gone:
            self.on_change("DELETED", {"metadata": {"name": name}})
        for obj in fresh.values():
            self.on_change("SYNC", obj)
        self.synced.set()
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def apply(self, kind: str, obj: Obj) -> None:
        """Record one event (also used after our own writes, so the cache never lags them)."""
        name = obj.get("metadata", {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            current = self.objects.get(name)
            if current is not None and _rv(current) > _rv(obj):
                return  # an older copy than the one we have
            self.objects[name] = obj
        self.on_change(kind, obj)

    async def _run(self) -> None:
        backoff = 0.2
        version = ""
        while True:
            try:
                if not version:
                    version = await self.relist()
                stream = watch.Watch().stream(
                    self.list_call,
                    *self.args,
                    label_selector=self.label_selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                )
                async with stream as events:
                    async for event in events:
                        kind = event["type"]
                        raw = event["raw_object"]
                        version = str(raw.get("metadata", {}).get("resourceVersion", version))
                        if kind != "BOOKMARK":
                            self.apply(kind, raw)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch %s: resourceVersion too old; relisting", self.args)
                    version = ""
                    continue
                log.warning("watch %s failed: HTTP %s %s", self.args, exc.status, exc.reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # noqa: BLE001 - a dropped stream of any kind: reconnect
                log.warning("watch %s dropped (%s); reconnecting", self.args, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def _rv(obj: Obj) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


class WatchingBackend(Backend):
    """What the kubernetes and agones backends share: the API client and one watch per namespace.

    A subclass says which namespaces it needs and what to list there; the
    watches follow spec changes (a new namespace gets a watch) and wake the
    controller on every real change.
    """

    def __init__(self, spec: FleetSpec) -> None:
        super().__init__(spec)
        self.api: client.ApiClient | None = None
        self.watches: dict[str, ObjectWatch] = {}

    @abstractmethod
    def _namespaces(self) -> set[str]:
        """Namespaces the spec's profiles live in."""

    @abstractmethod
    def _connected(self, api: client.ApiClient) -> None:
        """Make the typed API objects this backend calls."""

    @abstractmethod
    def _listing(self, namespace: str) -> tuple[ListCall, tuple[Any, ...], str]:
        """(list call, its arguments, label selector) of the objects to watch in a namespace."""

    async def start(self) -> None:
        self.api = await api_client()
        self._connected(self.api)
        for namespace in sorted(self._namespaces()):
            self._watch(namespace)
        await asyncio.gather(*(w.synced.wait() for w in self.watches.values()))

    def _watch(self, namespace: str) -> None:
        call, args, selector = self._listing(namespace)
        watch = ObjectWatch(call, *args, label_selector=selector, on_change=self._changed)
        self.watches[namespace] = watch
        watch.start()

    def _changed(self, kind: str, obj: Obj) -> None:
        if self.on_change is not None and kind != "SYNC":
            self.on_change()

    def update_spec(self, spec: FleetSpec) -> None:
        self.spec = spec
        if self.api is not None:
            for namespace in self._namespaces() - set(self.watches):
                self._watch(namespace)

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.watches.values()))
        if self.api is not None:
            await self.api.close()
