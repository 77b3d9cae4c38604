"""GameServerAllocation, answered as Agones v1.56.0's allocator answers it.

Ported from agones v1.56.0 `pkg/gameserverallocations/`: allocator.go
(`allocateFromLocalCluster`, `Retry` with `allocationRetry`, `ListenAndAllocate`,
`allocationUpdateWorkers`, `applyAllocationToGameServer`), allocation_cache.go
(`NewAllocationCache`'s informer handlers, `RemoveGameServer`, `syncCache`,
`ListSortedGameServers`) and find.go (`findGameServerForAllocation`).

The allocator does not read the store: it picks from its own cache of Ready
and Allocated GameServers, fed by an informer (here a store subscription,
whose callbacks run after the current request, as an informer's events come
after the write), takes the pick out of the cache and Updates it to Allocated
with the resourceVersion it cached. Up to five tries (10 ms apart in Agones,
at once here, so a change made during a try reaches the cache only after the
answer). The answer's `status.state`:

- Allocated: an update went through;
- UnAllocated: a try found no cached match (ErrNoGameServer). That is also
  the usual answer to an update CONFLICT: the conflicting GameServer has left
  the cache and is put back only when the informer brings its new version,
  so the next try finds nothing although a Ready GameServer is there;
- Contention: the pick had already left the cache on every try
  (ErrConflictInGameServerSelection);
- no answer but HTTP 500 "could not update the selected GameServer" when
  every try conflicted; the cache is then rebuilt (`Resync`).
"""

from __future__ import annotations

import random
from typing import Any

from . import errors
from .clock import Clock, rfc3339, rfc3339_nano
from .faults import Faults
from .resources import GAMESERVERS
from .selectors import LabelSelector, selector_problems
from .store import Change, Obj, Store, clone

LAST_ALLOCATED = "agones.dev/last-allocated"  # LastAllocatedAnnotationKey
RETRY_STEPS = 5  # allocationRetry.Steps
# What `inject_allocation_conflict` writes: any write does (the GameServer controller,
# an SDK SetAnnotation from the pod, another allocator replica); this one changes nothing else.
CONCURRENT_WRITE = "agones.dev/sdk-kubesim-concurrent-write"

NO_GAMESERVER = "Could not find an Allocatable GameServer"  # ErrNoGameServer
SELECTION_CONFLICT = "The Gameserver was already allocated"  # ErrConflictInGameServerSelection
UPDATE_CONFLICT = "could not update the selected GameServer"  # ErrGameServerUpdateConflict


class Allocator:
    def __init__(self, store: Store, clock: Clock, rng: random.Random, faults: Faults) -> None:
        self.store, self.clock, self.rng, self.faults = store, clock, rng, faults
        self.cache: dict[tuple[str, str], Obj] = {}
        #: Tries whose GameServer another writer changes between the cache read and the update.
        self.conflicts = 0

    def start(self) -> None:
        self.store.subscribe(GAMESERVERS, self._on_gameserver)

    # --- the allocation cache (allocation_cache.go) --------------------------------------

    def _on_gameserver(self, change: Change) -> None:
        """The informer's UpdateFunc / DeleteFunc (no AddFunc: a new GameServer is Creating)."""
        gs, meta = change.obj, change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == "DELETED":
            self.cache.pop(key, None)
            return
        old = change.prev
        version = meta.get("resourceVersion")
        if old is not None and old["metadata"].get("resourceVersion") == version:
            return
        if _being_deleted(gs):
            self.cache.pop(key, None)
        elif _matches(gs):
            self.cache[key] = gs  # stored objects are never changed in place
        elif old is not None and _matches(old):
            self.cache.pop(key, None)

    def resync(self) -> None:
        """`syncCache`: the cache rebuilt from every GameServer as the lister has them."""
        self.cache = {
            (gs["metadata"]["namespace"], gs["metadata"]["name"]): gs
            for gs in self.store.iter(GAMESERVERS)
            if not gs["metadata"].get("deletionTimestamp") and _matches(gs)
        }

    def _sorted(self) -> list[Obj]:
        """`ListSortedGameServers`: Allocated first, then by their node's Allocated count
        (most first), its Ready count (most first), then name; nodes without a count last."""
        counts = node_counts(self.store.iter(GAMESERVERS))

        def key(gs: Obj) -> tuple[Any, ...]:
            st = gs.get("status") or {}
            node = counts.get(st.get("nodeName", ""))
            ready, allocated = node if node else (0, 0)
            return (
                st.get("state") != "Allocated",
                node is None,
                -allocated,
                -ready,
                gs["metadata"]["name"],
            )

        return sorted(self.cache.values(), key=key)

    # --- allocating (allocator.go) -----------------------------------------------------------

    def allocate(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = _validated(body)
        created = rfc3339(self.clock.time())
        if self.faults.allocation_contention > 0:
            # Injected: another request took the pick out of the cache first, every try.
            self.faults.allocation_contention -= 1
            return allocation_answer(ns, spec, "Contention", None, created)
        gs, err = None, ""
        for _ in range(RETRY_STEPS):  # Retry(allocationRetry, ...)
            gs, err = self._try(ns, spec)
            if not err or err == NO_GAMESERVER:
                break
        if err == UPDATE_CONFLICT:
            # Every try conflicted: allocateFromLocalCluster resyncs and returns the error.
            self.resync()
            raise errors.ApiError(500, UPDATE_CONFLICT)
        if err:
            state = "Contention" if err == SELECTION_CONFLICT else "UnAllocated"
            return allocation_answer(ns, spec, state, None, created)
        assert gs is not None
        answer = allocation_answer(ns, spec, "Allocated", gs, created)
        if self.faults.allocation_drops > 0:
            self.faults.allocation_drops -= 1
            raise errors.DropResponse(gs["metadata"]["name"])
        return answer

    def _try(self, ns: str, spec: dict[str, Any]) -> tuple[Obj | None, str]:
        """One try: find in the cache, take out of the cache, update with the cached version."""
        pick = _find(ns, spec, self._sorted(), self.rng)
        if pick is None:
            return None, NO_GAMESERVER
        key = (ns, pick["metadata"]["name"])
        if self.cache.pop(key, None) is None:  # RemoveGameServer
            return None, SELECTION_CONFLICT
        if self.conflicts > 0:
            self.conflicts -= 1
            self._write_concurrently(ns, pick["metadata"]["name"])
        current = self.store.peek(GAMESERVERS, ns, pick["metadata"]["name"])
        if current is None:  # NotFound is no conflict: the pick goes back (a DELETED is coming)
            self.cache[key] = pick
            return None, UPDATE_CONFLICT
        if current["metadata"].get("resourceVersion") != pick["metadata"].get("resourceVersion"):
            return None, UPDATE_CONFLICT  # Conflict: not put back; the informer brings it
        updated = self._apply(current, spec.get("metadata") or {})
        self.cache[key] = updated  # AddGameServer: around at once for the next allocation
        return updated, ""

    def _write_concurrently(self, ns: str, name: str) -> None:
        def write(o: Obj) -> None:
            notes = o["metadata"].setdefault("annotations", {})
            notes[CONCURRENT_WRITE] = str(int(notes.get(CONCURRENT_WRITE, "0")) + 1)

        self.store.mutate(GAMESERVERS, ns, name, write)

    def _apply(self, gs: Obj, metadata: dict[str, Any]) -> Obj:
        """`applyAllocationToGameServer`: the allocation's labels and annotations, the
        last-allocated time, state Allocated."""
        now = rfc3339_nano(self.clock.time())

        def write(o: Obj) -> None:
            meta = o["metadata"]
            meta["labels"] = {**(meta.get("labels") or {}), **(metadata.get("labels") or {})}
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                **(metadata.get("annotations") or {}),
                LAST_ALLOCATED: now,
            }
            o["status"]["state"] = "Allocated"

        meta = gs["metadata"]
        return self.store.mutate(GAMESERVERS, meta["namespace"], meta["name"], write) or gs


def _validated(body: dict[str, Any]) -> dict[str, Any]:
    """The spec as `Validate` and `Converter` leave it (422 for what Validate refuses)."""
    spec = clone(body.get("spec") or {})
    selectors = (
        spec.get("selectors")
        or [*(spec.get("preferred") or []), *([spec["required"]] if spec.get("required") else [])]
        or [{}]
    )
    for i, sel in enumerate(selectors):
        # GameServerSelector.Validate: metav1.LabelSelectorAsSelector must accept it.
        problems = selector_problems(sel)
        if problems:
            raise errors.invalid(
                "GameServerAllocation",
                "",
                f"spec.selectors[{i}].labelSelector: Invalid value: "
                f"Error converting label selector: {'; '.join(problems)}",
                "allocation.agones.dev",
            )
        sel.setdefault("gameServerState", "Ready")
        if sel["gameServerState"] not in ("Ready", "Allocated"):
            raise errors.invalid(
                "GameServerAllocation",
                "",
                f'spec.selectors.gameServerState: Unsupported value: "{sel["gameServerState"]}": supported values: "Allocated", "Ready"',
                "allocation.agones.dev",
            )
    spec["selectors"] = selectors
    spec.setdefault("scheduling", "Packed")
    # Structs Go encodes even when empty (`omitempty` leaves structs in), as the answer shows them.
    spec.setdefault("multiClusterSetting", {"policySelector": {}})
    spec.setdefault("required", {})
    spec.setdefault("metadata", {})
    return spec


def _find(ns: str, spec: dict[str, Any], listed: list[Obj], rng: random.Random) -> Obj | None:
    """`findGameServerForAllocation`: the first GameServer (Packed: in list order;
    Distributed: in a random order) that each selector matches; the first selector's wins."""
    order = list(listed)
    if spec["scheduling"] == "Distributed":
        rng.shuffle(order)
    selectors = [(LabelSelector.from_spec(s), s["gameServerState"]) for s in spec["selectors"]]
    found: list[Obj | None] = [None] * len(selectors)
    for gs in order:
        if gs["metadata"].get("namespace") != ns:
            continue
        for j, (labels, state) in enumerate(selectors):
            if (
                found[j] is None
                and _state(gs) == state
                and labels.matches(gs["metadata"].get("labels"))
            ):
                found[j] = gs
    return next((gs for gs in found if gs is not None), None)


def node_counts(gameservers: Any) -> dict[str, tuple[int, int]]:
    """`PerNodeCounter.Counts()`: (Ready, Allocated) GameServers per node. Agones keeps a
    node's entry at 0/0 once seen; here a node without any has no entry."""
    counts: dict[str, tuple[int, int]] = {}
    for gs in gameservers:
        st = gs.get("status") or {}
        node, state = st.get("nodeName", ""), st.get("state")
        if node and state in ("Ready", "Allocated"):
            ready, allocated = counts.get(node, (0, 0))
            counts[node] = (ready + (state == "Ready"), allocated + (state == "Allocated"))
    return counts


def allocation_answer(
    ns: str, spec: dict[str, Any], state: str, gs: dict[str, Any] | None, created: str
) -> dict[str, Any]:
    """The GameServerAllocation `allocateFromLocalCluster` returns (201), as Go encodes it.

    agones v1.56.0 `pkg/gameserverallocations/allocator.go`: the request itself, its
    metadata's name the GameServer's, and status filled from the GameServer; its
    creationTimestamp is when it was decoded (`controller.go`, `allocationDeserialization`).
    `GameServerAllocationStatus` (`pkg/apis/allocation/v1/gameserverallocation.go`) always
    has state, gameServerName and source; ports, address, addresses, nodeName and metadata
    are `omitempty`: left out when empty, never null.
    """
    status: dict[str, Any] = {"state": state, "gameServerName": "", "source": ""}
    if gs is not None:
        st, meta = gs["status"], gs["metadata"]
        status.update(gameServerName=meta["name"], source="local")  # localAllocationSource
        status.update(
            {k: st[k] for k in ("ports", "address", "addresses", "nodeName") if st.get(k)}
        )
        notes = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
        status["metadata"] = notes  # a pointer: present, even when both maps are empty
    metadata = {"namespace": ns, "creationTimestamp": created}
    if gs is not None:
        metadata["name"] = gs["metadata"]["name"]
    return {
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


def _state(gs: dict[str, Any]) -> str:
    return str((gs.get("status") or {}).get("state", ""))


def _matches(gs: dict[str, Any]) -> bool:
    """`readyOrAllocatedGameServerMatcher`."""
    return _state(gs) in ("Ready", "Allocated")


def _being_deleted(gs: dict[str, Any]) -> bool:
    """`IsBeingDeleted`: a deletionTimestamp, or state Shutdown."""
    return bool(gs["metadata"].get("deletionTimestamp")) or _state(gs) == "Shutdown"
