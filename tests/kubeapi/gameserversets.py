"""How a Fleet's GameServers are brought to its replicas, as Agones v1.56.0 decides it.

Ported from agones v1.56.0 `pkg/gameserversets/controller.go`,
`computeReconciliationAction` and `deleteGameServers`, and
`pkg/gameserversets/gameserversets.go`, `SortGameServersByStrategy`
(`sortGameServersByPackedStrategy`, `sortGameServersByDistributedStrategy`).
The simulator has no GameServerSet object: a Fleet's replicas go straight to
its GameServers (Agones' Fleet controller copies them onto its one
GameServerSet when no rolling update is under way).

What matters for whoever else sets `spec.replicas`: Allocated and Reserved
GameServers always count and are never chosen; one being deleted (or in
Shutdown) does not count, so deleting an Allocated GameServer creates a
replacement at once; on scale-down, GameServers not yet on a node go first,
then those on the least full nodes, a not-yet-Ready one before a Ready one on
the same node. The chosen ones are set to Shutdown (the GameServer controller
then deletes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# cmd/controller/main.go defaults: max-game-server-creations-per-batch,
# max-game-server-deletions-per-batch, max-pod-pending-count.
MAX_CREATIONS = 64
MAX_DELETIONS = 64
MAX_PENDING = 5000
_PENDING = ("PortAllocation", "Creating", "Starting", "Scheduled")  # podPendingCount++
_BEFORE_READY = (*_PENDING, "RequestReady")  # IsBeforeReady


def _state(gs: dict[str, Any]) -> str:
    return str((gs.get("status") or {}).get("state", ""))


def deletable(gs: dict[str, Any]) -> bool:
    """`IsDeletable`: Allocated and Reserved only once they are being deleted."""
    if _state(gs) in ("Allocated", "Reserved"):
        return bool(gs["metadata"].get("deletionTimestamp"))
    return True


def being_deleted(gs: dict[str, Any]) -> bool:
    """`IsBeingDeleted`."""
    return bool(gs["metadata"].get("deletionTimestamp")) or _state(gs) == "Shutdown"


def reconciliation(
    strategy: str,
    gameservers: list[dict[str, Any]],
    counts: dict[str, tuple[int, int]],
    target: int,
    max_creations: int = MAX_CREATIONS,
    max_deletions: int = MAX_DELETIONS,
    max_pending: int = MAX_PENDING,
) -> tuple[int, list[dict[str, Any]]]:
    """`computeReconciliationAction`: how many to add, and which to delete."""
    up = sum(1 for gs in gameservers if not deletable(gs))  # pass 1: Allocated, Reserved
    pending = 0
    delete_count = 0
    potential: list[dict[str, Any]] = []
    to_delete: list[dict[str, Any]] = []
    for gs in gameservers:  # pass 2
        if not deletable(gs) or being_deleted(gs):
            continue
        state = _state(gs)
        if state in ("Unhealthy", "Error"):
            # Error: shouldDeleteErroredGameServer is true without an errored-at
            # annotation, which the simulator never writes.
            to_delete.append(gs)
            delete_count -= 1
            continue
        pending += state in _PENDING  # any other state (unknown ones too) is up, not pending
        if up >= target:
            delete_count += 1
        else:
            up += 1
        potential.append(gs)
    add = 0
    if up < target:
        add = min(target - up, max_creations)
        if add + pending > max_pending:
            add = max(0, max_pending - pending)
    if delete_count > 0:
        to_delete += sort_for_deletion(strategy, potential, counts)[:delete_count]
    return add, to_delete[:max_deletions]


def sort_for_deletion(
    strategy: str, gameservers: Iterable[dict[str, Any]], counts: dict[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    """`SortGameServersByStrategy`: the first ones go first."""
    if strategy != "Packed":  # Distributed: by creation time, oldest first (sic)
        return sorted(gameservers, key=lambda g: g["metadata"].get("creationTimestamp", ""))

    def packed(gs: dict[str, Any]) -> tuple[Any, ...]:
        node = (gs.get("status") or {}).get("nodeName", "")
        if node not in counts:  # not scheduled yet, or its node gone: first
            return (0, 0, "", 0, gs["metadata"]["name"])
        ready, allocated = counts[node]
        # Least full node first; on one node a not-yet-Ready one before a Ready one.
        return (1, ready + allocated, node, _state(gs) not in _BEFORE_READY, gs["metadata"]["name"])

    return sorted(gameservers, key=packed)
