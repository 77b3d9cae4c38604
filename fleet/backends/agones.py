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

The FleetAutoscaler (Buffer policy) sizes the Fleet; the broker only raises
`spec.replicas` at once when demand arrives, never lowers it. Agones' Buffer
policy cannot scale to zero: at least `bufferSize` (>= 1) GameServers stay warm.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from kubernetes_asyncio import client

from ..errors import BackendError, Conflict, PodGone
from ..model import Phase, PodRecord, http_address
from ..slug import slugify
from ..spec import FleetSpec, Profile
from .kubeclient import api_errors, read_json
from .kubepods import CLAIMED_AT, STATE, USER, _created
from .kubewatch import WatchingBackend

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
AGONES = ("agones.dev", "v1")
ALLOCATION = ("allocation.agones.dev", "v1")
FLEET_LABEL = "agones.dev/fleet"
ALLOCATE_ATTEMPTS = 4  # contention or a lost response: retried with jitter, then the user waits
FLEET_CACHE_SECONDS = 1.0
STARTING = {"PortAllocation", "Creating", "Starting", "Scheduled", "RequestReady", "Reserved"}
DEAD = {"Unhealthy", "Error"}


def allocation_body(fleet: str, user: str, slug: str) -> dict[str, Any]:
    """A GameServerAllocation that returns the user's GameServer if they have one."""
    return {
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "spec": {
            "selectors": [
                {"matchLabels": {FLEET_LABEL: fleet, USER: slug}, "gameServerState": "Allocated"},
                # Never a GameServer that was ever someone's (SDK Ready() from inside
                # the pod puts an Allocated one back to Ready with its labels).
                {
                    "matchLabels": {FLEET_LABEL: fleet},
                    "matchExpressions": [{"key": USER, "operator": "DoesNotExist"}],
                    "gameServerState": "Ready",
                },
            ],
            "metadata": {
                "labels": {USER: slug, STATE: "claimed"},
                "annotations": {USER: user, CLAIMED_AT: f"{time.time():.3f}"},
            },
        },
    }


def gameserver_phase(gs: dict[str, Any]) -> tuple[Phase, str]:
    meta = gs.get("metadata", {})
    state = str((gs.get("status") or {}).get("state") or "Creating")
    if meta.get("deletionTimestamp") or state == "Shutdown":
        return Phase.GONE, "being deleted"
    label = (meta.get("labels") or {}).get(USER)
    if label and state != "Allocated":
        # Only an allocation labels a GameServer, and only its own pod (SDK Ready()
        # or Reserve()) takes it out of Allocated: its user's code did. Never reused.
        return Phase.FAILED, f"GameServer claimed by {label} left Allocated (now {state})"
    if label and label != slugify((meta.get("annotations") or {}).get(USER, "")):
        return Phase.FAILED, f"GameServer user label {label} disagrees with its annotation"
    if state in ("Ready", "Allocated"):
        return Phase.READY, ""
    if state in DEAD:
        return Phase.FAILED, f"GameServer {state}"
    return Phase.STARTING, state


class AgonesBackend(WatchingBackend):
    name = "agones"
    probes_readiness = False  # the SDK's Ready() (the in-pod agent) says it
    manages_replicas = True
    allocates = True

    def __init__(self, spec: FleetSpec) -> None:
        super().__init__(spec)
        self.custom: client.CustomObjectsApi | None = None
        self._fleet_replicas: dict[tuple[str, str], tuple[float, int]] = {}
        self._said_no_zero = False

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
        ports = status.get("ports") or []
        addr = ""
        if status.get("address") and ports:
            addr = http_address(status["address"], ports[0].get("port", ""))
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

    async def mark_claimed(self, pod_id: str, user: str, slug: str) -> None:
        """Check that the allocation wrote this user's claim; never write one here.

        A user label on a GameServer that Agones did not allocate to that user
        would mark it as tampered with (gameserver_phase), so a claim whose
        GameServer is not Allocated with the user's label is refused (Conflict).
        """
        found = self._find(pod_id)
        if found is None:
            raise PodGone(f"gameserver {pod_id} is not known to the watch")
        namespace, gs = found
        if not _allocated_to(gs, user, slug):  # the watch may lag the allocation: ask
            assert self.custom is not None
            with api_errors(f"read gameserver {pod_id}"):
                gs = await read_json(
                    await self.custom.get_namespaced_custom_object(
                        *AGONES, namespace, "gameservers", pod_id, _preload_content=False
                    )
                )
            self.watches[namespace].apply("MODIFIED", gs)
        if not _allocated_to(gs, user, slug):
            raise Conflict(f"gameserver {pod_id} is not allocated to this user")

    async def allocate(self, profile: Profile, user: str, slug: str) -> PodRecord | None:
        """The user's GameServer (the same one on every retry); None when none is Ready.

        Contention and lost responses (agones#607) are retried with jitter: the
        Allocated+user selector makes a retry return the GameServer the lost
        response had allocated, never a second one.
        """
        assert self.custom is not None and profile.agones is not None
        namespace, fleet = profile.agones.namespace, profile.agones.fleet
        body = allocation_body(fleet, user, slug)
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
                return None
            log.info("allocation for %s: %s; retrying", user, state)
            await asyncio.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
        return None  # still contended: the user waits and is served from the queue

    async def _allocated(self, namespace: str, status: dict[str, Any]) -> PodRecord:
        name = status["gameServerName"]
        watch = self.watches[namespace]
        if name in watch.objects:
            current = watch.objects[name]
            meta = status.get("metadata") or {}
            merged = {
                **current,
                "metadata": {
                    **current["metadata"],
                    "labels": {
                        **(current["metadata"].get("labels") or {}),
                        **meta.get("labels", {}),
                    },
                    "annotations": {
                        **(current["metadata"].get("annotations") or {}),
                        **meta.get("annotations", {}),
                    },
                },
                "status": {**(current.get("status") or {}), "state": "Allocated"},
            }
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
        """Raise the Fleet at once on demand; the FleetAutoscaler does every scale-down."""
        block = profile.agones
        if block is None or self.custom is None:
            return
        if profile.buffer_for(0) == 0 and not self._said_no_zero:
            self._said_no_zero = True
            log.warning(
                "profile %s: buffer 0, but Agones' Buffer policy cannot scale to zero; "
                "the FleetAutoscaler keeps at least one GameServer warm",
                profile.name,
            )
        key = (block.namespace, block.fleet)
        at, known = self._fleet_replicas.get(key, (0.0, -1))
        if replicas <= known and time.monotonic() - at < FLEET_CACHE_SECONDS:
            return
        try:
            with api_errors(f"read fleet {block.fleet}"):
                fleet = await read_json(
                    await self.custom.get_namespaced_custom_object(
                        *AGONES, block.namespace, "fleets", block.fleet, _preload_content=False
                    )
                )
            current = int((fleet.get("spec") or {}).get("replicas") or 0)
            if replicas > current:
                log.info("fleet %s: %d -> %d replicas (demand)", block.fleet, current, replicas)
                with api_errors(f"scale fleet {block.fleet}"):
                    await read_json(
                        await self.custom.patch_namespaced_custom_object(
                            *AGONES, block.namespace, "fleets", block.fleet,
                            {"spec": {"replicas": replicas}},
                            _content_type=MERGE_PATCH, _preload_content=False,
                        )
                    )  # fmt: skip
                current = replicas
            self._fleet_replicas[key] = (time.monotonic(), current)
        except BackendError as exc:
            log.warning("cannot size fleet %s: %s", block.fleet, exc)

    def outputs_path(self, slug: str) -> str:
        return f"/outputs/{slug}"

    async def prepare_outputs(self, slug: str) -> None:
        """The in-pod agent makes the folder on the shared volume; the broker has no mount."""


def _allocated_to(gs: dict[str, Any], user: str, slug: str) -> bool:
    """Allocated, and its label and annotation both name this user (as the allocation wrote)."""
    meta = gs.get("metadata", {})
    return (
        (gs.get("status") or {}).get("state") == "Allocated"
        and (meta.get("labels") or {}).get(USER) == slug
        and (meta.get("annotations") or {}).get(USER) == user
    )
