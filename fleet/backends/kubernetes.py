"""The `kubernetes` backend: one plain pod per WebUI, no Agones needed.

Observation comes from one shared watch per namespace (ObjectWatch), never a
poll per pod. A claim is written on the pod itself (label + annotation) with
a resourceVersion precondition, so two brokers can never both label one pod.
Every call is retried while the API server refuses it only for now (429, 5xx,
no answer: kubeclient.call); only a Conflict or a pod that is gone ends a claim.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from kubernetes_asyncio import client

from ..errors import BackendError, Conflict, PodGone
from ..model import PodRecord
from ..spec import FleetSpec, Profile
from .base import OnChange
from .kubeclient import call
from .kubepods import (
    CLAIMED_AT,
    GROUPS,
    SAFE_TO_EVICT,
    SELECTOR,
    STATE,
    USER,
    build_pod,
    pod_record,
    template_of,
)
from .kubewatch import WatchingBackend

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"


class KubernetesBackend(WatchingBackend):
    name = "kubernetes"
    probes_readiness = False  # the pod's readiness probe and Ready condition say it

    def __init__(self, spec: FleetSpec, *, on_change: OnChange = None) -> None:
        super().__init__(spec, on_change=on_change)
        self.core: client.CoreV1Api | None = None

    def _namespaces(self) -> set[str]:
        return {p.kubernetes.namespace for p in self.spec.profiles if p.kubernetes is not None}

    def _port(self, profile_name: str) -> int:
        try:
            settings = self.spec.profile(profile_name).kubernetes
        except KeyError:
            settings = None
        return settings.port if settings is not None else 7860

    def _connected(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    def _listing(self, namespace: str) -> tuple[Any, tuple[Any, ...], str]:
        assert self.core is not None
        return self.core.list_namespaced_pod, (namespace,), SELECTOR

    def _record(self, obj: dict[str, Any]) -> PodRecord:
        labels = obj.get("metadata", {}).get("labels") or {}
        return pod_record(
            obj,
            self._port(labels.get("sdbroker.io/profile", "")),
            node_lost_grace=self.spec.node_lost_grace,
        )

    def _find(self, pod_id: str) -> tuple[str, dict[str, Any]] | None:
        for namespace, watch in self.watches.items():
            if pod_id in watch.objects:
                return namespace, watch.objects[pod_id]
        return None

    def template_of(self, profile: Profile) -> str:
        return template_of(profile) if profile.kubernetes is not None else ""

    async def create(self, profile: Profile, pod_id: str) -> PodRecord:
        assert self.core is not None
        if profile.kubernetes is None:
            raise BackendError(f"profile {profile.name} has no kubernetes: block")
        body = build_pod(profile, pod_id)
        namespace = profile.kubernetes.namespace
        core = self.core
        created = await call(
            f"create pod {pod_id}",
            # A dict body is serialised as it is (kubernetes_asyncio 36.1.0 client/api_client.py,
            # sanitize_for_serialization); core_v1_api.pyi types it V1Pod only.
            lambda: core.create_namespaced_pod(namespace, body, _preload_content=False),  # type: ignore[arg-type]
        )
        self.watches[namespace].apply("ADDED", created)
        return self._record(created)

    async def delete(self, pod_id: str) -> None:
        assert self.core is not None
        core = self.core
        found = self._find(pod_id)
        namespaces = [found[0]] if found else sorted(self.watches)
        for namespace in namespaces:
            try:
                gone = await call(
                    f"delete pod {pod_id}",
                    functools.partial(
                        core.delete_namespaced_pod,
                        pod_id,
                        namespace,
                        grace_period_seconds=10,
                        _preload_content=False,
                    ),
                )
            except PodGone:
                self.watches[namespace].apply("DELETED", {"metadata": {"name": pod_id}})
                continue
            # Into the cache at once, so no reconcile before the watch event
            # can mistake a pod being deleted for one to adopt.
            if gone.get("kind") == "Pod":
                self.watches[namespace].apply("MODIFIED", gone)
            else:
                self.watches[namespace].apply("DELETED", {"metadata": {"name": pod_id}})
            return

    async def observe(self) -> list[PodRecord]:
        return [self._record(obj) for w in self.watches.values() for obj in w.objects.values()]

    async def phase_of(self, pod_id: str) -> PodRecord | None:
        found = self._find(pod_id)
        for namespace in [found[0]] if found else sorted(self.watches):
            try:
                obj = await self._read(namespace, pod_id)
            except PodGone:
                continue
            return self._record(obj)
        return None

    async def _read(self, namespace: str, pod_id: str) -> dict[str, Any]:
        assert self.core is not None
        core = self.core
        return await call(
            f"read pod {pod_id}",
            lambda: core.read_namespaced_pod(pod_id, namespace, _preload_content=False),
        )

    async def _patch(self, namespace: str, pod_id: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.core is not None
        core = self.core
        patched = await call(
            f"patch pod {pod_id}",
            # core_v1_api.py accepts _content_type (its all_params); core_v1_api.pyi omits it
            # (kubernetes_asyncio 36.1.0).
            lambda: core.patch_namespaced_pod(  # type: ignore[call-arg]
                pod_id, namespace, body, _content_type=MERGE_PATCH, _preload_content=False
            ),
        )
        self.watches[namespace].apply("MODIFIED", patched)
        return patched

    async def mark_claimed(self, pod_id: str, user: str, slug: str, groups: str = "") -> None:
        """Label the pod as this user's, only if nobody else labelled it first.

        A claimed pod also tells the cluster autoscaler not to empty its node
        (scale-down and node upgrades evict otherwise, ending a live session).
        """
        found = self._find(pod_id)
        if found is None:
            raise PodGone(f"pod {pod_id} is not known to the watch")
        namespace, obj = found
        for _ in range(3):
            labels = obj["metadata"].get("labels") or {}
            if labels.get(STATE) == "claimed" and labels.get(USER) != slug:
                raise Conflict(f"pod {pod_id} is already claimed by someone else")
            body = {
                "metadata": {
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                    "labels": {STATE: "claimed", USER: slug},
                    "annotations": {
                        USER: user,
                        CLAIMED_AT: f"{time.time():.3f}",
                        GROUPS: groups,
                        SAFE_TO_EVICT: "false",
                    },
                }
            }
            try:
                await self._patch(namespace, pod_id, body)
                return
            except Conflict:
                # The pod changed (often only its status): look again, and retry if still free.
                obj = await self._read(namespace, pod_id)
        raise Conflict(f"pod {pod_id} kept changing while being claimed")

    async def mark_ready(self, pod_id: str) -> None:
        found = self._find(pod_id)
        if found is None:
            return
        namespace, obj = found
        if (obj["metadata"].get("labels") or {}).get(STATE) != "warming":
            return
        body = {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "labels": {STATE: "ready"},
            }
        }
        try:
            await self._patch(namespace, pod_id, body)
        except BackendError as exc:  # a label for people only: never worth failing over
            log.debug("could not label pod %s ready: %s", pod_id, exc)

    def outputs_path(self, slug: str) -> str:
        return f"/outputs/{slug}"

    async def prepare_outputs(self, slug: str) -> None:
        """The in-pod agent makes the folder on the shared volume; the broker has no mount."""
