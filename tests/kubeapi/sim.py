"""`KubeSim`: the simulated cluster a test starts, talks to, and breaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from .admin import run_action
from .agones import AgonesController
from .agones_actions import AgonesActions
from .agones_schema import SchemaChecks
from .clock import Clock, ScaledClock
from .credentials import TokenIssuer, exec_user
from .errors import ApiError
from .events import EventRecorder
from .faults import ApiErrorRule, Faults, PodFailure, PodFailureRule
from .fleets import FleetController, validate_fleetautoscaler
from .http import ApiServer, Hooks
from .lifecycle import PodLifecycle, Timing
from .nodeloss import TOLERATION_SECONDS, lose_node
from .nodes import Cluster, NodeSpec
from .processes import PodProcess, ProcessRunner
from .resources import (
    EVENTS,
    FLEETAUTOSCALERS,
    FLEETS,
    GAMESERVERALLOCATIONS,
    GAMESERVERS,
    NODES,
    PODS,
    Resource,
)
from .selectors import LabelSelector
from .store import Obj, Store, clone
from .watches import WatchStreamer

T = TypeVar("T")
Span = float | tuple[float, float]


def _span(value: Span) -> tuple[float, float]:
    return (
        (float(value), float(value))
        if isinstance(value, int | float)
        else (float(value[0]), float(value[1]))
    )


class KubeSim(AgonesActions):
    """A Kubernetes API server (pods, nodes, events, Agones) on a loopback port, with simulated lifecycles.

    Every duration is in simulated seconds on `clock` (default `ScaledClock(time_scale)`:
    real time sped up `time_scale` times).

    nodes, gpus_per_node: how many nodes with how many `nvidia.com/gpu` each, or a list of `NodeSpec`.
    start_delay: a bound pod's image pull + container start, a number or a (low, high) range.
    ready_delay: running -> Ready for pods with a readinessProbe (and no process runner).
    schedule_delay: creation -> scheduling. stop_delay: containers stopping on a graceful
        delete, at most the grace period (None: the whole grace period).
    process_runner: start a real process per pod on its own 127.x.y.z podIP; Ready when it answers.
    token: the bearer token required (None: no auth); allow_anonymous: also accept no token (kubectl).
    history_size: watch history kept per resource (older resourceVersions get 410 Expired).
    bookmark_interval, watch_timeout: watch BOOKMARK period; server-side end of a watch without
        timeoutSeconds (randomised between 1x and 2x, as the apiserver does).
    autoscaler_sync: a FleetAutoscaler's sync interval when its spec.sync does not say.
    backoff: (first, max) CrashLoopBackOff / ImagePullBackOff back-off. image_pull_retry:
        ErrImagePull -> ImagePullBackOff. events: record core/v1 Events. seed: names, uids, delays.
    """

    def __init__(
        self,
        *,
        nodes: int | Sequence[NodeSpec] = 1,
        gpus_per_node: int = 1,
        start_delay: Span = 0.0,
        ready_delay: Span = 0.0,
        schedule_delay: float = 0.0,
        stop_delay: float | None = 0.0,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        process_runner: ProcessRunner | None = None,
        token: str | None = "kubesim-token",
        allow_anonymous: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 1000,
        bookmark_interval: float = 60.0,
        watch_timeout: float = 1800.0,
        autoscaler_sync: float = 30.0,
        backoff: tuple[float, float] = (10.0, 300.0),
        image_pull_retry: float = 2.0,
        events: bool = True,
        seed: int | None = None,
    ) -> None:
        if isinstance(nodes, int):
            nodes = [NodeSpec(f"node-{i + 1}", gpus_per_node) for i in range(nodes)]
        self.node_specs = list(nodes)
        self.timing = Timing(
            schedule_delay=schedule_delay,
            start_delay=_span(start_delay),
            ready_delay=_span(ready_delay),
            stop_delay=stop_delay,
            image_pull_retry=image_pull_retry,
            backoff_base=backoff[0],
            backoff_max=backoff[1],
        )
        self.clock: Clock = clock or ScaledClock(time_scale)
        self.process_runner = process_runner
        self.token = token
        self.allow_anonymous = allow_anonymous
        self.host = host
        self.port = port
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.autoscaler_sync = autoscaler_sync
        self.events_enabled = events
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.credentials = TokenIssuer()
        self.schema = SchemaChecks()  # Agones objects against Agones' schemas (agones_schema.py)
        self._runner: web.AppRunner | None = None

    # --- running ---------------------------------------------------------------------------

    async def start(self) -> KubeSim:
        self.store = Store(self.clock, self.rng, history_size=self.history_size)
        self.store.check = self.schema.stored
        self.cluster = Cluster(self.node_specs)
        self.recorder = EventRecorder(self.store, enabled=self.events_enabled)
        self.lifecycle = PodLifecycle(
            self.store,
            self.cluster,
            self.clock,
            self.rng,
            self.timing,
            self.faults,
            self.recorder,
            self.process_runner,
        )
        self.agones = AgonesController(
            self.store, self.lifecycle, self.clock, self.rng, self.faults
        )
        self.fleets = FleetController(
            self.store, self.agones, self.clock, self.rng, sync_interval=self.autoscaler_sync
        )
        self.watches = WatchStreamer(
            self.store,
            self.clock,
            self.rng,
            bookmark_interval=self.bookmark_interval,
            watch_timeout=self.watch_timeout,
        )
        hooks = Hooks(
            create={
                PODS: self.lifecycle.create,
                GAMESERVERS: self.agones.create_gameserver,
                GAMESERVERALLOCATIONS: self.agones.allocate,
            },
            delete={PODS: self.lifecycle.delete, GAMESERVERS: self.agones.delete_gameserver},
            validate={FLEETAUTOSCALERS: validate_fleetautoscaler},
        )
        self.api = ApiServer(
            self.store,
            self.faults,
            hooks,
            self.watches,
            token=self.token,
            anonymous=self.allow_anonymous,
            admin=self._admin,
            credentials=self.credentials,
            schemas=self.schema,
        )
        self.lifecycle.start()
        self.agones.start()
        self.fleets.start()
        for name in self.cluster.nodes:
            self.store.create(NODES, None, self.cluster.node_object(name))
        self._runner = web.AppRunner(
            self.api.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[attr-defined]
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is None:
            return
        self.watches.drop()
        await self.fleets.close()
        await self.lifecycle.close()
        await self._runner.cleanup()
        self._runner = None
        self.schema.check_clean()

    async def _admin(self, action: str, args: dict[str, Any]) -> Any:
        return await run_action(self, action, args)

    async def __aenter__(self) -> KubeSim:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(
        self, namespace: str = "default", *, exec_ttl: float | None = None
    ) -> dict[str, Any]:
        """`exec_ttl`: credentials from an exec plugin, each token valid that many seconds."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        if exec_ttl is not None:
            user = exec_user(self.url, exec_ttl)
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url}}],
            "users": [{"name": "kubesim", "user": user}],
            "contexts": [
                {
                    "name": "kubesim",
                    "context": {"cluster": "kubesim", "user": "kubesim", "namespace": namespace},
                }
            ],
            "current-context": "kubesim",
        }

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", *, exec_ttl: float | None = None
    ) -> Path:
        """A kubeconfig (JSON is YAML) pointing at this server: no TLS, a bearer token."""
        path = Path(path)
        path.write_text(json.dumps(self.kubeconfig(namespace, exec_ttl=exec_ttl), indent=2))
        return path

    # --- looking ---------------------------------------------------------------------------

    def objects(
        self, res: Resource, namespace: str | None = None, selector: str | None = None
    ) -> list[Obj]:
        return clone(self.store.list(res, namespace, LabelSelector.parse(selector))[0])

    def pods(self, namespace: str | None = None, selector: str | None = None) -> list[Obj]:
        return self.objects(PODS, namespace, selector)

    def pod(self, namespace: str, name: str) -> Obj | None:
        obj = self.store.peek(PODS, namespace, name)
        return clone(obj) if obj else None

    def gameservers(self, namespace: str | None = None, selector: str | None = None) -> list[Obj]:
        return self.objects(GAMESERVERS, namespace, selector)

    def gameserver(self, namespace: str, name: str) -> Obj | None:
        obj = self.store.peek(GAMESERVERS, namespace, name)
        return clone(obj) if obj else None

    def fleet(self, namespace: str, name: str) -> Obj | None:
        obj = self.store.peek(FLEETS, namespace, name)
        return clone(obj) if obj else None

    def nodes(self) -> list[Obj]:
        return self.objects(NODES)

    def events(self, namespace: str | None = None, name: str | None = None) -> list[Obj]:
        return [
            e
            for e in self.objects(EVENTS, namespace)
            if name is None or e["involvedObject"]["name"] == name
        ]

    def process(self, namespace: str, name: str) -> PodProcess | None:
        """The real process behind a pod (or GameServer), if the process runner started one."""
        p = self.lifecycle.pods.get((namespace, name))
        return p.process if p else None

    @property
    def open_watches(self) -> int:
        return len(self.store.watchers())

    @property
    def request_counts(self) -> dict[str, int]:
        return dict(self.api.requests)

    async def wait_for(
        self, predicate: Callable[[], T], within: float = 10.0, interval: float = 0.01
    ) -> T:
        """Poll `predicate` until it returns something truthy (`within` real seconds), else TimeoutError."""
        deadline = time.monotonic() + within
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {within}s")
            await asyncio.sleep(interval)

    # --- breaking --------------------------------------------------------------------------

    def inject_pod_failure(
        self,
        kind: PodFailure | str,
        *,
        image: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        selector: str | None = None,
        count: int | None = None,
        crash_after: float = 5.0,
    ) -> PodFailureRule:
        """Pods matching (image/name fnmatch, namespace, label selector) fail this way when they start."""
        rule = PodFailureRule(
            PodFailure(kind),
            image,
            name,
            namespace,
            LabelSelector.parse(selector),
            count,
            crash_after,
        )
        self.faults.pod_rules.append(rule)
        return rule

    def clear_pod_failures(self) -> None:
        self.faults.pod_rules.clear()

    def evict(self, namespace: str, name: str, message: str | None = None) -> Obj:
        """phase Failed, reason Evicted (the pod stays until deleted); its GPU is freed."""
        return clone(self.lifecycle.evict(namespace, name, message))

    def oom_kill(self, namespace: str, name: str) -> Obj:
        """The container is OOMKilled (137) and restarted, or the pod Fails with restartPolicy Never."""
        return clone(self.lifecycle.kill_container(namespace, name, oom=True))

    def crash(self, namespace: str, name: str) -> Obj:
        """The container exits with code 1 and is restarted after a back-off."""
        return clone(self.lifecycle.kill_container(namespace, name, oom=False))

    def vanish(self, namespace: str, name: str) -> Obj:
        """The pod is gone at once (DELETED, no grace), as when its node disappears."""
        return clone(self.lifecycle.remove_now(namespace, name))

    def add_node(
        self, name: str | None = None, gpus: int = 1, labels: dict[str, str] | None = None
    ) -> Obj:
        spec = NodeSpec(name or f"node-{len(self.cluster.nodes) + 1}", gpus, labels or {})
        self.cluster.add(spec)
        node = self.store.create(NODES, None, self.cluster.node_object(spec.name))
        self.lifecycle.kick()
        return clone(node)

    def fail_node(self, name: str) -> list[str]:
        """The node disappears with its pods (each DELETED). Returns `namespace/name` of those pods."""
        pods = self.cluster.remove(name)
        self.store.remove(NODES, None, name)
        for ns, pod in pods:
            with contextlib.suppress(ApiError):
                self.lifecycle.remove_now(ns, pod)
        return [f"{ns}/{pod}" for ns, pod in pods]

    def inject_api_error(
        self,
        status: int,
        *,
        verb: str = "*",
        resource: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        path: str | None = None,
        count: int = 1,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> ApiErrorRule:
        """The next `count` requests matching verb/resource/name/path get this error status.

        A watch with 410 gets what a real apiserver sends: 200 and an ERROR event (Expired).
        """
        rule = ApiErrorRule(
            status, verb, resource, name, namespace, path, count, message, retry_after
        )
        self.faults.api_rules.append(rule)
        return rule

    def drop_watches(self, abrupt: bool = False) -> int:
        """End all open watch streams; `abrupt` cuts the connections instead of ending the streams."""
        return self.watches.drop(abrupt)

    def compact(self) -> None:
        """Forget watch history: every resourceVersion issued so far is now too old (410)."""
        self.store.compact()

    def issue_token(self, ttl: float) -> dict[str, Any]:
        """A bearer token valid `ttl` (wall-clock) seconds: what execplugin.py prints."""
        return self.credentials.issue(ttl)

    def lose_node(self, name: str, evict_after: float | None = TOLERATION_SECONDS) -> list[str]:
        """The node stops reporting: its pods turn not Ready, then Terminating (nodeloss.py)."""
        return lose_node(self, name, evict_after)
