"""The one interface every fleet backend implements (local, kubernetes, agones).

The backend owns the pods and their durable record (a file, a label); Redis
only indexes them. Nothing here knows about users' HTTP traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import aiohttp

from ..claiming import TAKE_READY, ClaimStrategy
from ..errors import BackendError
from ..model import PodRecord
from ..spec import FleetSpec, Profile

#: What a backend calls when the platform reports a change (None: nobody to tell).
OnChange = Callable[[], None] | None


class Backend(ABC):
    name: str = "base"
    #: True when the controller must probe a starting pod over HTTP to know it
    #: is ready (local processes); False when the platform reports readiness
    #: itself (Kubernetes readiness probes, Agones Ready state).
    probes_readiness: bool = True
    #: True when pods are created in sets by the platform (Agones Fleets), so
    #: the controller must not create or delete pods one by one.
    manages_replicas: bool = False
    #: True when the platform picks the pod for a claim (Agones allocation): the
    #: broker then reserves a turn in Redis, calls `allocate`, and binds its answer.
    allocates: bool = False
    #: How `Fleet.claim` finds a pod here: take a Ready one from the index, or (with
    #: `allocates`) have the platform allocate one (fleet/claiming.py).
    claim_strategy: ClaimStrategy = TAKE_READY

    def __init__(self, spec: FleetSpec, *, on_change: OnChange = None) -> None:
        self.spec = spec
        #: Called when the platform reports a change (watch event): the controller
        #: reconciles at once instead of on its next tick (its Doorbell's `wake`).
        self.on_change = on_change

    def update_spec(self, spec: FleetSpec) -> None:
        self.spec = spec

    def template_of(self, profile: Profile) -> str:
        """The hash of what `create` would start for PROFILE now ("" when this backend
        does not roll pods itself). Each pod carries the hash it was made with
        (`PodRecord.extra["template"]`); the controller retires Ready pods with another."""
        return ""

    async def start(self) -> None:
        """Connect, start watches. Called once before anything else."""

    async def close(self) -> None:
        """Stop watches and release clients (never deletes pods)."""

    async def stop_all(self) -> None:
        """Stop every pod this process started (a one-machine broker's exit), after
        `stop_fleet` ended their claims. Nothing by default: pods on a platform outlive
        the broker (the local backend stops its processes)."""

    def synced(self) -> bool:
        """True once `observe` shows every pod there is (a watch cache has listed)."""
        return True

    def problem(self) -> str:
        """Why the platform refuses to show us the pods, for good ("" when it does not):
        readiness fails with it (missing RBAC, a CRD not installed)."""
        return ""

    @abstractmethod
    async def create(self, profile: Profile, pod_id: str) -> PodRecord:
        """Start a pod; returns at once with phase STARTING."""

    @abstractmethod
    async def delete(self, pod_id: str) -> None:
        """Delete the pod and its record; no error if it is already gone."""

    @abstractmethod
    async def observe(self) -> list[PodRecord]:
        """Every pod this backend manages, as its own records say (cheap: no probing)."""

    @abstractmethod
    async def phase_of(self, pod_id: str) -> PodRecord | None:
        """One pod's current record, asked of the platform now (after a proxy error)."""

    @abstractmethod
    async def mark_claimed(self, pod_id: str, user: str, slug: str, groups: str = "") -> None:
        """Write the claim on the pod's own record (raises Conflict/PodGone), with the
        user's groups (model.record_groups: a rebuilt claim keeps them)."""

    async def keep_settings(
        self, pod_id: str, addr: str, slug: str, profile: Profile, http: aiohttp.ClientSession
    ) -> None:
        """Give the user's kept WebUI settings to the pod just bound, and keep saving them
        while it is claimed (fleet/webui_settings.py). Never raises: a claim goes on
        without them. Nothing here: on Kubernetes and Agones the pod's agent does it (the
        broker only reads the outputs volume); the local backend does it itself."""

    async def mark_ready(self, pod_id: str) -> None:
        """Note on the pod's own record that it is offered (a label, for people)."""

    async def set_replicas(self, profile: Profile, replicas: int) -> None:
        """For backends that manage replicas themselves (Agones)."""

    async def allocate(
        self, profile: Profile, user: str, slug: str, groups: str = ""
    ) -> PodRecord | None:
        """For backends that allocate themselves (Agones); None = nothing Ready.
        `groups`: model.record_groups, written on the record as mark_claimed does."""
        return None

    def outputs_path(self, slug: str) -> str:
        """The user's outputs folder as the WebUI sees it."""
        return f"{self.spec.outputs.rstrip('/')}/{slug}"

    async def prepare_outputs(self, slug: str) -> None:
        """Create the user's folder where the broker can (shared storage on one machine).

        One mkdir in the event loop, tens of microseconds: a thread's hop cost more,
        as the thread waits for the GIL behind a busy loop (up to the 5 ms switch
        interval, twice), which made it most of a claim's time under load. Only a
        missing base folder (a first claim, a deleted base) is made in a thread."""
        path = self.outputs_path(slug)
        if _make_folder(path):
            return
        try:
            await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot make the outputs folder {path}: {exc}") from exc


#: The key of a pod's template hash in PodRecord.extra (and in its Redis hash).
TEMPLATE = "template"


def template_hash(template: object) -> str:
    """16 hex digits of the SHA-256 of TEMPLATE as canonical JSON: short enough for a
    Kubernetes label value (63 characters at most), long enough never to collide here."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _make_folder(path: str) -> bool:
    """Make PATH, or find it made; False when its parent is missing."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise BackendError(f"the outputs folder {path} is a file, not a folder") from None
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise BackendError(f"cannot make the outputs folder {path}: {exc}") from exc
    return True
