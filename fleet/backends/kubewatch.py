"""One shared list+watch per namespace and kind, kept as a cache of raw objects.

Everything the backends need to observe (pods, GameServers) comes from this
cache: no API call per pod, no polling. The watch resumes from the last
resourceVersion (bookmarks keep it fresh), relists on 410 Gone, and
reconnects with backoff (at least the server's Retry-After) when the API
server drops or refuses it. Each watch has a client-side deadline a little
past its server-side `timeoutSeconds`, so a connection whose path died in
silence is given up, never waited on for ever.

The stream is read here rather than through kubernetes_asyncio's `Watch`,
which drops the response's status and headers (an error answer reaches it as
a Status line: watch/watch.py, `Watch.unmarshal_event`), so a 429's
Retry-After would be lost, and which builds a model object per event that
nobody here reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..aiotasks import raise_if_cancelled
from ..spec import FleetSpec
from . import kuberest
from .base import Backend, OnChange
from .kubecache import Obj, ObjectCache, version_of
from .kubeclient import api_client, error_of, message_of, read_json, retry_after

log = logging.getLogger(__name__)
ListCall = Callable[..., Awaitable[Any]]
WATCH_SECONDS = (
    240  # server-side timeout: the watch is renewed (from its resourceVersion) this often
)
WATCH_SLACK = 30.0  # the client gives up on a watch this long after the server should have ended it
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
RETRY_AFTER_MAX = 60.0  # seconds: a longer Retry-After is cut to this
#: Refusals that no retry will fix by itself (missing RBAC, a CRD not installed,
#: credentials refused): said by readiness until a list or watch succeeds.
REFUSALS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
HINTS = {
    401: "the API server refused the broker's credentials",
    403: "the broker's service account lacks this permission (ingress/base/rbac.yaml)",
    404: "the API server does not serve this resource: is its CRD installed?",
}


def describe(call: ListCall, args: tuple[Any, ...]) -> str:
    """What a list call lists: "pods in namespace sd", "gameservers.agones.dev in namespace sd"."""
    name = getattr(call, "__name__", "")
    if name.endswith("_custom_object") and len(args) >= 4:  # (group, version, namespace, plural)
        return f"{args[3]}.{args[0]} in namespace {args[2]}"
    kind = name.rsplit("_", 1)[-1]
    return f"{kind}s in namespace {args[0]}" if args else f"{kind}s"


class ObjectWatch(ObjectCache):
    def __init__(
        self,
        list_call: ListCall,
        *args: Any,
        label_selector: str,
        on_change: Callable[[str, Obj], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(on_change)
        self.list_call = list_call
        self.args = args
        self.label_selector = label_selector
        self.what = describe(list_call, args)
        self.synced = asyncio.Event()
        #: Set once listed, or refused for good: how long start() waits.
        self.settled = asyncio.Event()
        #: Why the API server refuses to list or watch, for good ("" while it does not).
        self.problem = ""
        self.version = ""
        self._sleep = sleep  # the back-off's pause (tests record it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch:{self.what}")

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
        self.replace({o["metadata"]["name"]: o for o in body.get("items", [])})
        self.problem = ""
        self.synced.set()
        self.settled.set()
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            raise_if_cancelled()
            verb = "list"
            try:
                if not self.version:
                    self.version = await self.relist()
                verb = "watch"
                await self._watch()
                backoff = BACKOFF_FIRST
                continue
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of %s: resourceVersion too old; relisting", self.what)
                    self.version = ""
                    continue
                self._refused(verb, exc)
                wait = retry_after(exc)
                pause = max(backoff, min(wait, RETRY_AFTER_MAX) if wait is not None else 0.0)
                log.warning(
                    "%s %s: HTTP %s %s; again in %.1fs",
                    verb, self.what, exc.status, message_of(exc), pause,
                )  # fmt: skip
            except Exception as exc:
                pause = backoff
                log.warning(
                    "%s %s dropped (%s); again in %.1fs",
                    verb, self.what, str(exc) or type(exc).__name__, pause,
                )  # fmt: skip
            await self._sleep(pause)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _watch(self) -> None:
        """One watch request, from self.version, read until the server ends it."""
        deadline = aiohttp.ClientTimeout(
            total=WATCH_SECONDS + WATCH_SLACK,
            connect=kuberest.CONNECT_TIMEOUT,
            sock_connect=kuberest.CONNECT_TIMEOUT,
        )
        response = await self.list_call(
            *self.args,
            label_selector=self.label_selector,
            resource_version=self.version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            watch=True,
            _preload_content=False,
            _request_timeout=deadline,
        )
        try:
            if not 200 <= response.status <= 299:
                raise error_of(response, await response.read())
            self.problem = ""
            async for line in response.content:
                if line.strip():
                    self._line(line)
        finally:
            response.close()  # never back to the pool: it may be the connection that died

    def _line(self, line: bytes) -> None:
        event = json.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            # A Status in the stream (410 Expired, most often), raised as
            # kubernetes_asyncio's Watch.unmarshal_event does.
            exc = ApiException(status=obj.get("code"), reason=obj.get("reason"))
            exc.body = json.dumps(obj).encode()  # bytes, as an answer's (rest.py RESTResponse.data)
            raise exc
        self.version = version_of(obj) or self.version
        if kind != "BOOKMARK":
            self.event(str(kind), obj)
        self.expire()

    def _refused(self, verb: str, exc: ApiException) -> None:
        """A refusal no retry fixes by itself is said (once) and reported to readiness."""
        status = exc.status or 0
        if status not in REFUSALS:
            return
        problem = (
            f"cannot {verb} {self.what}: HTTP {status} {REFUSALS[status]}: "
            f"{message_of(exc)} ({HINTS[status]})"
        )
        if problem != self.problem:
            log.error("%s", problem)
        self.problem = problem
        self.settled.set()


class WatchingBackend(Backend):
    """What the kubernetes and agones backends share: the API client and one watch per namespace.

    A subclass says which namespaces it needs and what to list there; the
    watches follow spec changes (a new namespace gets a watch) and wake the
    controller on every real change.
    """

    def __init__(self, spec: FleetSpec, *, on_change: OnChange = None) -> None:
        super().__init__(spec, on_change=on_change)
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
        """Connect and list; returns once every watch has listed, or been refused for good
        (then `problem` says why, readiness fails, and the watch keeps trying)."""
        self.api = await api_client()
        self._connected(self.api)
        for namespace in sorted(self._namespaces()):
            self._watch(namespace)
        await asyncio.gather(*(w.settled.wait() for w in self.watches.values()))

    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watches.values())

    def problem(self) -> str:
        return "; ".join(w.problem for w in self.watches.values() if w.problem)

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
