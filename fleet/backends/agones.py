"""The `agones` backend: WebUI GameServers of an existing Agones Fleet.

Agones chooses the GameServer, so a claim is a GameServerAllocation, not a
pick from Redis's ready set: the allocation's first selector (Allocated,
labelled with the user) makes a retried or concurrent allocation return the
user's GameServer again instead of taking a second one. The labels and
annotations set on allocation are the durable record of the claim, and only
an allocation writes them.

A WebUI pod is hostile and shares localhost with its Agones SDK sidecar, so
it can call SDK Ready() on itself, which moves its Allocated GameServer back
to Ready with the user's labels on. Such a GameServer is never anyone's
again: the second selector takes only GameServers without a user label, and
a labelled GameServer that is not Allocated (or whose label and annotation
disagree) is reported FAILED, so the controller ends and deletes it and a
rebuild of the index never binds a claim to it.

The broker alone sizes the Fleet: it sets `spec.replicas` to claimed + queued +
buffer (within min and max), up and down, as the kubernetes backend creates
and deletes pods. There is no FleetAutoscaler: its Buffer policy sets
allocated + bufferSize on every sync (agones v1.56.0
`pkg/fleetautoscalers/fleetautoscalers.go`, `applyBufferPolicy`), which undid
every raise made for the queue and made the Fleet delete the GameServers it
had just started. Agones picks which unallocated GameServers a scale-down
removes, never an Allocated one (gameserversets `computeReconciliationAction`).
Reading GameServers (the WebUI is at the pod IP, not `status.address`) is
agones_objects.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from kubernetes_asyncio import client

from ..claiming import ALLOCATE
from ..errors import BackendError, Conflict, PodGone
from ..model import Phase, PodRecord, record_groups_of
from ..spec import FleetSpec, Profile
from .agones_objects import (
    FLEET_LABEL,
    allocated_to,
    allocation_body,
    free_ready,
    gameserver_phase,
    merged_allocation,
    webui_address,
)
from .base import OnChange
from .kubeclient import api_errors, read_json
from .kubepods import CLAIMED_AT, GROUPS, USER, _created
from .kubewatch import WatchingBackend

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
AGONES = ("agones.dev", "v1")
ALLOCATION = ("allocation.agones.dev", "v1")
AUTOSCALING = ("autoscaling.agones.dev", "v1")
# Contention, a conflict or a lost answer: retried with jitter, then the user waits in line.
ALLOCATE_ATTEMPTS = 4
FLEET_CACHE_SECONDS = 1.0
OWNER_MEMORY = 30.0  # seconds a size this broker set is taken as still its own
OTHER_OWNER_EVERY = 300.0  # seconds between two warnings that something else sets a Fleet's size


class AgonesBackend(WatchingBackend):
    name = "agones"
    probes_readiness = False  # the SDK's Ready() (the in-pod agent) says it
    manages_replicas = True
    allocates = True
    claim_strategy = ALLOCATE  # a GameServerAllocation picks the pod, bind.lua records it

    def __init__(self, spec: FleetSpec, *, on_change: OnChange = None) -> None:
        super().__init__(spec, on_change=on_change)
        self.custom: client.CustomObjectsApi | None = None
        self._fleet_replicas: dict[tuple[str, str], tuple[float, int]] = {}
        self._said_other_owner: dict[tuple[str, str], float] = {}

    def _fleets(self) -> dict[tuple[str, str], Profile]:
        """(namespace, fleet) -> profile."""
        return {(p.agones.namespace, p.agones.fleet): p for p in self.spec.profiles if p.agones}

    def _namespaces(self) -> set[str]:
        return {ns for ns, _ in self._fleets()}

    def _connected(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    def _listing(self, namespace: str) -> tuple[Any, tuple[Any, ...], str]:
        assert self.custom is not None
        return (
            self.custom.list_namespaced_custom_object,
            (*AGONES, namespace, "gameservers"),
            FLEET_LABEL,
        )

    def _record(self, gs: dict[str, Any]) -> PodRecord | None:
        meta = gs.get("metadata", {})
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        profile = self._fleets().get((meta.get("namespace", ""), labels.get(FLEET_LABEL, "")))
        if profile is None:
            return None
        status = gs.get("status") or {}
        phase, reason = gameserver_phase(gs)
        assert profile.agones is not None
        addr = webui_address(status, profile.agones.port)
        # A FAILED record names nobody: a rebuild must not bind a claim to it.
        allocated = phase is Phase.READY and status.get("state") == "Allocated" and labels.get(USER)
        claimed_at = annotations.get(CLAIMED_AT, "")
        return PodRecord(
            id=meta.get("name", ""),
            profile=profile.name,
            phase=phase,
            addr=addr,
            user=annotations.get(USER, "") if allocated else "",
            created=_created(meta),
            claimed_at=float(claimed_at) if claimed_at.replace(".", "", 1).isdigit() else 0.0,
            reason=reason,
            terminating=phase is Phase.GONE,
            groups=record_groups_of(annotations.get(GROUPS, "")) if allocated else (),
            extra={
                "namespace": meta.get("namespace", ""),
                "node": status.get("nodeName") or "",
                "fleet": labels.get(FLEET_LABEL, ""),
            },
        )

    def _find(self, pod_id: str) -> tuple[str, dict[str, Any]] | None:
        for namespace, watch in self.watches.items():
            if pod_id in watch.objects:
                return namespace, watch.objects[pod_id]
        return None

    async def create(self, profile: Profile, pod_id: str) -> PodRecord:
        raise BackendError("the agones backend never creates GameServers itself (the Fleet does)")

    async def delete(self, pod_id: str) -> None:
        assert self.custom is not None
        found = self._find(pod_id)
        for namespace in [found[0]] if found else sorted(self.watches):
            try:
                with api_errors(f"delete gameserver {pod_id}"):
                    gone = await read_json(
                        await self.custom.delete_namespaced_custom_object(
                            *AGONES, namespace, "gameservers", pod_id, _preload_content=False
                        )
                    )
            except PodGone:
                continue
            # The cache must not show the GameServer Allocated after this (it would be adopted).
            if namespace in self.watches:
                if gone.get("kind") == "GameServer" and gone["metadata"].get("deletionTimestamp"):
                    self.watches[namespace].apply("MODIFIED", gone)
                else:
                    self.watches[namespace].apply("DELETED", {"metadata": {"name": pod_id}})
            return

    async def observe(self) -> list[PodRecord]:
        records = (self._record(gs) for w in self.watches.values() for gs in w.objects.values())
        return [r for r in records if r is not None]

    async def phase_of(self, pod_id: str) -> PodRecord | None:
        assert self.custom is not None
        found = self._find(pod_id)
        for namespace in [found[0]] if found else sorted(self.watches):
            try:
                with api_errors(f"read gameserver {pod_id}"):
                    gs = await read_json(
                        await self.custom.get_namespaced_custom_object(
                            *AGONES, namespace, "gameservers", pod_id, _preload_content=False
                        )
                    )
            except PodGone:
                continue
            return self._record(gs)
        return None

    async def mark_claimed(self, pod_id: str, user: str, slug: str, groups: str = "") -> None:
        """Check that the allocation wrote this user's claim; never write one here.

        A user label on a GameServer that Agones did not allocate to that user
        would mark it as tampered with (gameserver_phase), so a claim whose
        GameServer is not Allocated with the user's label is refused (Conflict).
        """
        found = self._find(pod_id)
        if found is None:
            raise PodGone(f"gameserver {pod_id} is not known to the watch")
        namespace, gs = found
        if not allocated_to(gs, user, slug):  # the watch may lag the allocation: ask
            assert self.custom is not None
            with api_errors(f"read gameserver {pod_id}"):
                gs = await read_json(
                    await self.custom.get_namespaced_custom_object(
                        *AGONES, namespace, "gameservers", pod_id, _preload_content=False
                    )
                )
            self.watches[namespace].apply("MODIFIED", gs)
        if not allocated_to(gs, user, slug):
            raise Conflict(f"gameserver {pod_id} is not allocated to this user")

    async def allocate(
        self, profile: Profile, user: str, slug: str, groups: str = ""
    ) -> PodRecord | None:
        """The user's GameServer (the same one on every retry); None when none is Ready.

        Contention and lost responses (agones#607) are retried with jitter: the
        Allocated+user selector makes a retry return the GameServer the lost
        response had allocated, never a second one. So is UnAllocated while the
        API shows a Ready GameServer nobody holds (`_free`): Agones answers UnAllocated
        not only when nothing is Ready but also after a conflict on the one it
        picked, which leaves its allocation cache until the next watch event
        brings it back (v1.56.0 `pkg/gameserverallocations/allocator.go`,
        `allocateFromLocalCluster` and `allocationUpdateWorkers`).
        """
        assert self.custom is not None and profile.agones is not None
        namespace, fleet = profile.agones.namespace, profile.agones.fleet
        body = allocation_body(fleet, user, slug, groups)
        for attempt in range(ALLOCATE_ATTEMPTS):
            try:
                with api_errors(f"allocate from fleet {fleet}"):
                    answer = await read_json(
                        await self.custom.create_namespaced_custom_object(
                            *ALLOCATION, namespace, "gameserverallocations", body,
                            _preload_content=False,
                        )
                    )  # fmt: skip
            except BackendError as exc:
                if isinstance(exc, Conflict) or attempt == ALLOCATE_ATTEMPTS - 1:
                    raise
                log.warning("allocation for %s failed (%s); retrying", user, exc)
                await asyncio.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
                continue
            status = answer.get("status") or {}
            state = status.get("state")
            if state == "Allocated":
                return await self._allocated(namespace, status)
            if state == "UnAllocated":
                ready = (
                    0 if attempt == ALLOCATE_ATTEMPTS - 1 else await self._free(namespace, fleet)
                )
                if not ready:
                    return None  # nothing Ready: the user waits in line
                log.info("allocation for %s: UnAllocated with %d Ready; retrying", user, ready)
                await asyncio.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
                continue
            log.info("allocation for %s: %s; retrying", user, state)
            await asyncio.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
        return None  # still contended: the user waits and is served from the queue

    async def _free(self, namespace: str, fleet: str) -> int:
        """GameServers the Ready selector would take, as the API server has them now.

        The watch first: if even it shows none, there are none. If it shows some, it
        may only lag allocations made a moment ago (then the user waits in line, as
        they should), so a fresh list decides."""
        assert self.custom is not None
        if not free_ready(self.watches[namespace].objects.values(), fleet):
            return 0
        try:
            with api_errors(f"list gameservers of fleet {fleet}"):
                listed = await read_json(
                    await self.custom.list_namespaced_custom_object(
                        *AGONES, namespace, "gameservers",
                        label_selector=f"{FLEET_LABEL}={fleet}", _preload_content=False,
                    )
                )  # fmt: skip
        except BackendError as exc:
            log.info("cannot list the GameServers of fleet %s (%s): the user waits", fleet, exc)
            return 0
        return free_ready(listed.get("items") or [], fleet)

    async def _allocated(self, namespace: str, status: dict[str, Any]) -> PodRecord:
        name = status["gameServerName"]
        watch = self.watches[namespace]
        if name in watch.objects:
            merged = merged_allocation(watch.objects[name], status)
            record = self._record(merged)
        else:
            assert self.custom is not None
            with api_errors(f"read gameserver {name}"):
                gs = await read_json(
                    await self.custom.get_namespaced_custom_object(
                        *AGONES, namespace, "gameservers", name, _preload_content=False
                    )
                )
            watch.apply("MODIFIED", gs)
            record = self._record(gs)
        if record is None:
            raise BackendError(f"gameserver {name} belongs to no profile")
        return record

    async def set_replicas(self, profile: Profile, replicas: int) -> None:
        """Make the Fleet's `spec.replicas` the profile's target, up or down: the broker is its
        only owner. A value we did not write means something else sets it too (a
        FleetAutoscaler left from an older install, a Fleet applied with `replicas:`): said
        loudly, since the two would undo each other's every change."""
        block = profile.agones
        if block is None or self.custom is None:
            return
        key = (block.namespace, block.fleet)
        at, known = self._fleet_replicas.get(key, (0.0, -1))
        if replicas == known and time.monotonic() - at < FLEET_CACHE_SECONDS:
            return
        try:
            with api_errors(f"read fleet {block.fleet}"):
                fleet = await read_json(
                    await self.custom.get_namespaced_custom_object(
                        *AGONES, block.namespace, "fleets", block.fleet, _preload_content=False
                    )
                )
            current = int((fleet.get("spec") or {}).get("replicas") or 0)
            # Only a value this broker set moments ago says anything: another broker's
            # controller may have led (and sized the Fleet) while this one did not.
            if current != known and time.monotonic() - at < OWNER_MEMORY:
                self._other_owner(key, known, current)
            if current != replicas:
                log.info("fleet %s: %d -> %d replicas", block.fleet, current, replicas)
                with api_errors(f"scale fleet {block.fleet}"):
                    await read_json(
                        await self.custom.patch_namespaced_custom_object(
                            *AGONES, block.namespace, "fleets", block.fleet,
                            {"spec": {"replicas": replicas}},
                            _content_type=MERGE_PATCH, _preload_content=False,
                        )  # type: ignore[call-arg]  # custom_objects_api.pyi omits _content_type, .py takes it
                    )  # fmt: skip
            self._fleet_replicas[key] = (time.monotonic(), replicas)
        except BackendError as exc:
            log.warning("cannot size fleet %s: %s", block.fleet, exc)

    def _other_owner(self, key: tuple[str, str], ours: int, theirs: int) -> None:
        said = self._said_other_owner.get(key)
        if said is not None and time.monotonic() - said < OTHER_OWNER_EVERY:
            return
        self._said_other_owner[key] = time.monotonic()
        namespace, fleet = key
        log.warning(
            "fleet %s: spec.replicas is %d, not the %d this broker set: something else sizes "
            "it too. The broker owns it: delete any FleetAutoscaler of this Fleet "
            "(kubectl -n %s get fleetautoscalers) and apply the Fleet without replicas",
            fleet, theirs, ours, namespace,
        )  # fmt: skip

    async def start(self) -> None:
        await super().start()
        await self._check_autoscalers()

    async def _check_autoscalers(self) -> None:
        """A FleetAutoscaler on one of our Fleets would fight the broker over its size (an
        install from before the broker owned it): say so at once, by name."""
        assert self.custom is not None
        for namespace, fleet in sorted(self._fleets()):
            try:
                with api_errors(f"list fleetautoscalers in {namespace}"):
                    found = await read_json(
                        await self.custom.list_namespaced_custom_object(
                            *AUTOSCALING, namespace, "fleetautoscalers", _preload_content=False
                        )
                    )
            except BackendError as exc:  # no such CRD, or no right to list: nothing to say
                log.debug("cannot list fleetautoscalers: %s", exc)
                continue
            for fas in found.get("items") or []:
                if (fas.get("spec") or {}).get("fleetName") == fleet:
                    log.error(
                        "FleetAutoscaler %s/%s sizes fleet %s, which the broker sizes: they "
                        "undo each other (GameServers started for the queue are deleted). "
                        "Delete it: kubectl -n %s delete fleetautoscaler %s",
                        namespace, fas["metadata"]["name"], fleet, namespace,
                        fas["metadata"]["name"],
                    )  # fmt: skip

    def outputs_path(self, slug: str) -> str:
        return f"/outputs/{slug}"

    async def prepare_outputs(self, slug: str) -> None:
        """The in-pod agent makes the folder on the shared volume; the broker has no mount."""
