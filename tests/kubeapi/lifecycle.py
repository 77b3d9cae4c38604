"""Pods from creation to deletion: the scheduler and a kubelet per pod.

Pending (unscheduled; Unschedulable when no node has the GPUs) -> bound to a
node -> ContainerCreating for `start_delay` -> Running -> Ready (after
`ready_delay`, or when the real process behind the pod answers its probe).
Injected failures and external actions (evict, OOM, crash, vanish) change the
status the way a kubelet reports them. All delays go through the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import errors
from .clock import Clock, rfc3339
from .events import EventRecorder
from .faults import Faults, PodFailure
from .nodes import Cluster
from .podspec import container_name, default_pod, first_image, probe_path, process_env, serve_port
from .podstatus import PodSim
from .processes import IpPool, PodProcess, ProcessInfo, ProcessRunner
from .resources import PODS
from .store import Change, Store, check_preconditions

Range = tuple[float, float]


@dataclass(frozen=True)
class Timing:
    """Simulated seconds for each step of a pod's life."""

    schedule_delay: float = 0.0
    start_delay: Range = (0.0, 0.0)  # bound -> containers running (image pull, create)
    ready_delay: Range = (0.0, 0.0)  # running -> Ready, for pods with a readinessProbe
    stop_delay: float | None = (
        0.0  # containers stopping on a graceful delete (<= grace; None: all of it)
    )
    image_pull_retry: float = 2.0  # ErrImagePull -> ImagePullBackOff
    backoff_base: float = 10.0
    backoff_max: float = 300.0


class PodLifecycle:
    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        clock: Clock,
        rng: random.Random,
        timing: Timing,
        faults: Faults,
        events: EventRecorder,
        runner: ProcessRunner | None,
    ) -> None:
        self.store, self.cluster, self.clock, self.rng = store, cluster, clock, rng
        self.timing, self.faults, self.events, self.runner = timing, faults, events, runner
        self.ips = IpPool()
        self.pods: dict[tuple[str, str], PodSim] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kicked = False
        self._closed = False
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self.store.subscribe(PODS, self._on_change)

    async def close(self) -> None:
        self._closed = True  # a scheduling pass asked for before now starts no kubelet
        for p in self.pods.values():
            if p.process:
                p.process.kill()
        tasks = list(self._tasks) + [p.task for p in self.pods.values() if p.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in self.pods.values():
            if p.process and p.process.proc:
                await p.process.proc.wait()
        if self._session:
            await self._session.close()

    # --- scheduling ------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == "ADDED":
            self.pods[key] = PodSim(key[0], key[1], meta["uid"])
            if self.timing.schedule_delay > 0:
                self._spawn(self._delayed_kick(self.timing.schedule_delay))
            else:
                self.kick()
        elif change.type == "DELETED" and key in self.pods and self.pods[key].uid == meta["uid"]:
            self._release(self.pods.pop(key))

    async def _delayed_kick(self, delay: float) -> None:
        await self.clock.sleep(delay)
        self.kick()

    def kick(self) -> None:
        """Run a scheduling pass soon (once, however often it is asked for)."""
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._schedule_pending)

    def _schedule_pending(self) -> None:
        self._kicked = False
        if self._closed:
            return
        for p in list(self.pods.values()):
            if p.node is not None or p.deleting or p.terminal:
                continue
            obj = self.store.peek(PODS, *p.key)
            if obj is None:
                continue
            node, why = self.cluster.find(obj)
            if node is None:
                if why != p.unschedulable:
                    p.unschedulable = why
                    self._publish(p)
                    self.events.record(
                        obj, "FailedScheduling", why, type="Warning", component="default-scheduler"
                    )
                continue
            self.cluster.bind(node, p.key, obj)
            p.node, p.unschedulable = node, None
            p.port = serve_port(obj)
            p.host_ip = self.cluster.nodes[node].address
            p.ip = self.ips.allocate(p.port if self.runner else None)
            self._publish(p, node_name=node)
            self.events.record(
                obj,
                "Scheduled",
                f"Successfully assigned {p.namespace}/{p.name} to {node}",
                component="default-scheduler",
            )
            p.task = asyncio.create_task(self._run_pod(p), name=f"kubelet {p.namespace}/{p.name}")

    # --- the kubelet -----------------------------------------------------------------------

    async def _run_pod(self, p: PodSim) -> None:
        # The sandbox comes first: the CNI gives the pod its IP before any image is pulled
        # (a pod in ImagePullBackOff has a podIP; Agones waits for one to say Scheduled).
        p.initialized, p.start_time, p.ip_visible = True, self.clock.time(), True
        self._publish(p)
        obj = self.store.peek(PODS, *p.key)
        if obj is None:
            return
        image = first_image(obj)
        self._event(p, "Pulling", f'Pulling image "{image}"')
        await self.clock.sleep(self._sample(self.timing.start_delay))
        p.failure = self.faults.take_pod_failure(obj)
        if p.failure and p.failure.kind == PodFailure.IMAGE_PULL:
            await self._image_pull_failing(p, image)
        self._event(p, "Pulled", f'Successfully pulled image "{image}"')
        await self._container_loop(p, None)

    async def _image_pull_failing(self, p: PodSim, image: str) -> None:
        backoff = self.timing.backoff_base
        while True:
            message = (
                f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull '
                f'and unpack image "{image}": not found'
            )
            p.container.waiting = ("ErrImagePull", message)
            self._publish(p)
            self._event(p, "Failed", message, warning=True)
            await self.clock.sleep(self.timing.image_pull_retry)
            p.container.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self._publish(p)
            self._event(p, "BackOff", f'Back-off pulling image "{image}"', warning=True)
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, self.timing.backoff_max)

    async def _container_loop(self, p: PodSim, exited: dict[str, Any] | None) -> None:
        backoff = self.timing.backoff_base
        while True:
            if exited is None:
                exited = await self._run_container(p)
            if not await self._after_exit(p, exited, backoff):
                return
            exited = None
            backoff = min(backoff * 2, self.timing.backoff_max)

    async def _run_container(self, p: PodSim) -> dict[str, Any]:
        """Start the containers; returns their `terminated` state when they exit."""
        obj = self.store.peek(PODS, *p.key)
        spec = (obj or {}).get("spec") or {}
        c = p.container
        c.generation += 1
        c.waiting, c.terminated, c.ready = None, None, False
        c.running_since = self.clock.time()
        p.phase, p.ip_visible = "Running", True
        failing = p.failure and p.failure.kind in (PodFailure.CRASH_LOOP, PodFailure.OOM)
        probed = any(x.get("readinessProbe") for x in spec.get("containers") or [])
        if self.runner is not None and not failing and obj is not None:
            return await self._run_process(p, obj)
        if not probed and not failing:
            c.ready = True
        self._publish(p)
        self._event(p, "Started", "Started container " + container_name(spec))
        if failing:
            assert p.failure is not None
            await self.clock.sleep(p.failure.crash_after)
            if p.failure.kind == PodFailure.OOM:
                return p.terminated_now(self.clock.time(), 137, "OOMKilled")
            return p.terminated_now(self.clock.time(), 1, "Error")
        if probed:
            await self.clock.sleep(self._sample(self.timing.ready_delay))
            c.ready = True
            self._publish(p)
        await asyncio.Future()  # runs until something stops it
        raise AssertionError("unreachable")

    async def _run_process(self, p: PodSim, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.runner is not None and p.ip is not None
        info = ProcessInfo(p.name, p.namespace, p.uid, p.ip, p.port, process_env(obj, p))
        process = PodProcess(self.runner, info, self.runner.ready_path or probe_path(obj))
        p.process = process
        try:
            await process.start()
        except OSError as err:  # the kubelet's StartError: the command could not be run
            p.process = None
            return p.terminated_now(self.clock.time(), 128, "StartError", str(err))
        self._publish(p)
        self._event(p, "Started", "Started container " + container_name(obj.get("spec") or {}))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if await process.wait_ready(self._session):
            p.container.ready = True
            self._publish(p)
        code = await process.wait()
        return p.terminated_now(
            self.clock.time(),
            128 - code if code < 0 else code,
            "Completed" if code == 0 else "Error",
        )

    async def _after_exit(self, p: PodSim, terminated: dict[str, Any], backoff: float) -> bool:
        """Record the exit; restart after a back-off (True) or end the pod (False)."""
        c = p.container
        c.terminated, c.ready = terminated, False
        obj = self.store.peek(PODS, *p.key)
        policy = ((obj or {}).get("spec") or {}).get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and terminated["exitCode"] == 0):
            p.phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
            self._free(p)
            self._publish(p)
            return False
        self._publish(p)
        c.last_terminated, c.terminated = terminated, None
        c.restart_count += 1
        name = container_name((obj or {}).get("spec") or {})
        c.waiting = (
            "CrashLoopBackOff",
            f"back-off {int(backoff)}s restarting failed container={name} pod={p.name}_{p.namespace}({p.uid})",
        )
        self._publish(p)
        self._event(p, "BackOff", "Back-off restarting failed container " + name, warning=True)
        await self.clock.sleep(backoff)
        return True

    # --- actions from tests and from the API ----------------------------------------------

    def create(self, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return self.store.create(PODS, ns, default_pod(body))

    def delete(
        self, ns: str, name: str, grace: int | None, preconditions: dict[str, Any] | None
    ) -> dict[str, Any]:
        obj = self.store.get(PODS, ns, name)
        check_preconditions(obj, preconditions, "pods", "")
        p = self.pods.get((ns, name))
        if grace is None:
            grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        if obj["metadata"].get("deletionTimestamp") and grace > 0:
            return obj
        if p is None or p.node is None or grace <= 0 or p.terminal:
            return self.remove_now(ns, name)
        p.deleting = True

        def mark(o: dict[str, Any]) -> None:
            o["metadata"]["deletionTimestamp"] = rfc3339(self.clock.time() + grace)
            o["metadata"]["deletionGracePeriodSeconds"] = grace

        updated = self.store.mutate(PODS, ns, name, mark) or obj
        if p.task:
            p.task.cancel()
        p.task = asyncio.create_task(self._terminate(p, grace), name=f"terminate {ns}/{name}")
        return updated

    async def _terminate(self, p: PodSim, grace: int) -> None:
        obj = self.store.peek(PODS, *p.key)
        if obj is not None:
            self._event(p, "Killing", "Stopping container " + container_name(obj.get("spec") or {}))
        if p.process:
            await p.process.stop(grace)
        stop = self.timing.stop_delay
        await self.clock.sleep(grace if stop is None else min(stop, grace))
        if p.container.running_since is not None and p.container.terminated is None:
            p.container.terminated = p.terminated_now(self.clock.time(), 0, "Completed")
        p.container.waiting, p.container.ready = None, False
        self._publish(p)
        self.pods.pop(p.key, None)
        p.task = None  # this task: it ends here, not by cancellation
        self._release(p)
        with contextlib.suppress(errors.ApiError):
            self.store.remove(PODS, *p.key)

    def remove_now(self, ns: str, name: str) -> dict[str, Any]:
        """Gone at once (grace 0, or a vanished pod): DELETED, process killed, GPUs freed."""
        p = self.pods.pop((ns, name), None)
        if p is not None:
            self._release(p)
        return self.store.remove(PODS, ns, name)

    def evict(self, ns: str, name: str, message: str | None = None) -> dict[str, Any]:
        p = self._running(ns, name)
        self._stop_kubelet(p)
        now = self.clock.time()
        p.phase, p.reason, p.disruption = "Failed", "Evicted", "TerminationByKubelet"
        p.message = message or (
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 64Mi. "
            "Container webui was using 30Gi, request is 0, has larger consumption of memory."
        )
        if p.container.running_since is not None:
            p.container.terminated = p.terminated_now(now, 137, "Error")
        p.container.waiting, p.container.ready = None, False
        self._free(p)
        obj = self._publish(p)
        self._event(p, "Evicted", p.message, warning=True)
        return obj

    def kill_container(self, ns: str, name: str, *, oom: bool) -> dict[str, Any]:
        """The container dies now (OOMKilled or a crash); the kubelet restarts it per restartPolicy."""
        p = self._running(ns, name)
        self._stop_kubelet(p)
        now = self.clock.time()
        exited = (
            p.terminated_now(now, 137, "OOMKilled") if oom else p.terminated_now(now, 1, "Error")
        )
        if oom:
            self._event(
                p, "OOMKilling", "Memory cgroup out of memory: Killed process", warning=True
            )
        p.task = asyncio.create_task(self._container_loop(p, exited), name=f"kubelet {ns}/{name}")
        return self.store.get(PODS, ns, name)

    # --- helpers ---------------------------------------------------------------------------

    def _running(self, ns: str, name: str) -> PodSim:
        p = self.pods.get((ns, name))
        if p is None or self.store.peek(PODS, ns, name) is None:
            raise errors.not_found("pods", "", name)
        if p.node is None or p.terminal or p.deleting:
            raise errors.ApiError(409, f"pod {ns}/{name} is not running on a node")
        return p

    def _stop_kubelet(self, p: PodSim) -> None:
        if p.task:
            p.task.cancel()
            p.task = None
        if p.process:
            self._reap(p.process)
            p.process = None

    def _reap(self, process: PodProcess) -> None:
        process.kill()
        if process.proc is not None:
            self._spawn(process.proc.wait())

    def _free(self, p: PodSim) -> None:
        if self.cluster.release(p.node, p.key):
            self.kick()

    def _release(self, p: PodSim) -> None:
        self._stop_kubelet(p)
        self._free(p)

    def _publish(self, p: PodSim, node_name: str | None = None) -> dict[str, Any]:
        now = self.clock.time()

        def write(o: dict[str, Any]) -> None:
            if node_name:
                o["spec"]["nodeName"] = node_name
            o["status"] = p.render(o.get("spec") or {}, now)

        return self.store.mutate(PODS, *p.key, write) or {}

    def _event(self, p: PodSim, reason: str, message: str, warning: bool = False) -> None:
        obj = self.store.peek(PODS, *p.key)
        if obj is not None:
            self.events.record(
                obj, reason, message, type="Warning" if warning else "Normal", host=p.node
            )

    def _sample(self, span: Range) -> float:
        low, high = span
        return low if high <= low else self.rng.uniform(low, high)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
