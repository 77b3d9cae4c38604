"""The simulator's Agones decisions, each as Agones v1.56.0 makes it (see the module
named in each test): where a GameServer's address comes from, what an allocation
answers, which GameServers a scale-down removes, what a Buffer FleetAutoscaler does
to a Fleet someone else resized."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi import FLEETS, GAMESERVERS
from tests.kubeapi.gameserver_address import node_address
from tests.kubeapi.gameserversets import reconciliation
from tests.kubeapi.store import Change
from tests.test_kubeapi import (
    AGONES,
    ALLOCATION,
    MERGE,
    NS,
    allocation,
    cluster,
    fleet_body,
    ready_gameservers,
)


def webui_fleet(name: str = "webui", replicas: int = 1) -> dict[str, Any]:
    """fleet_body with the port as sdbroker renders it (portPolicy None) and a Dynamic one."""
    fleet = fleet_body(name, replicas)
    fleet["spec"]["template"]["spec"]["ports"] = [
        {"name": "webui", "portPolicy": "None", "containerPort": 7860, "protocol": "TCP"},
        {"name": "game", "containerPort": 7777},
    ]
    return fleet


# --- gameservers.go: address() / applyGameServerAddressAndPort ---


async def test_gameserver_address_is_the_nodes_and_the_pod_ip_is_in_addresses(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, nodes=1, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", webui_fleet())
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        (gs,) = sim.gameservers(NS)
        pod = sim.pod(NS, gs["metadata"]["name"])
        (node,) = sim.nodes()
        assert pod is not None
        status = gs["status"]
        node_ip = node["status"]["addresses"][0]["address"]
        assert status["address"] == node_ip != pod["status"]["podIP"]
        assert status["addresses"] == [
            *node["status"]["addresses"],
            {"type": "PodIP", "address": pod["status"]["podIP"]},
        ]
        game_host_port = gs["spec"]["ports"][1]["hostPort"]
        # portPolicy None: the containerPort, no hostPort; Dynamic: the node's hostPort.
        assert status["ports"] == [
            {"name": "webui", "port": 7860},
            {"name": "game", "port": game_host_port},
        ]
        (webui,) = pod["spec"]["containers"]
        assert webui["ports"] == [  # the template's, then what GameServer.Pod() appends
            {"containerPort": 7860},
            {"containerPort": 7860, "protocol": "TCP"},
            {"containerPort": 7777, "protocol": "UDP", "hostPort": game_host_port},
        ]


def test_node_address_order_is_agones_own() -> None:
    def node(*addresses: tuple[str, str]) -> dict[str, Any]:
        return {"status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}}

    internal = ("InternalIP", "10.128.0.2")
    assert node_address(node(internal, ("ExternalIP", "34.1.2.3")))[0] == "34.1.2.3"
    assert node_address(node(internal, ("ExternalDNS", "n.example")))[0] == "n.example"
    assert node_address(node(("ExternalIP", "not-an-ip"), internal))[0] == "10.128.0.2"
    assert node_address(node(("InternalDNS", "n.internal"), internal))[0] == "n.internal"
    with pytest.raises(LookupError):
        node_address(node(("Hostname", "n")))


# --- allocator.go: the state mapping ---


async def allocate(custom: client.CustomObjectsApi, user: str) -> dict[str, Any]:
    return await custom.create_namespaced_custom_object(
        *ALLOCATION, NS, "gameserverallocations", allocation(user)
    )


async def test_an_update_conflict_answers_unallocated_while_the_gameserver_stays_ready(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, nodes=6, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        sim.inject_allocation_conflict(1)
        answer = await allocate(custom, "alice")
        assert answer["status"]["state"] == "UnAllocated"
        assert len(ready_gameservers(sim)) == 1  # it was there all along
        await asyncio.sleep(0.01)  # the informer brings the new version back to the cache
        assert (await allocate(custom, "alice"))["status"]["state"] == "Allocated"

        # Every one of the five tries conflicting is no answer at all, but a 500.
        await custom.patch_namespaced_custom_object(
            *AGONES, NS, "fleets", "webui", {"spec": {"replicas": 6}}, _content_type=MERGE
        )
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 5)
        sim.inject_allocation_conflict(5)
        with pytest.raises(ApiException) as failed:
            await allocate(custom, "bob")
        assert failed.value.status == 500
        assert "could not update the selected GameServer" in str(failed.value.body)
        assert (await allocate(custom, "bob"))["status"]["state"] == "Allocated"  # resynced

        sim.inject_allocation_contention(1)
        assert (await allocate(custom, "carol"))["status"]["state"] == "Contention"


# --- gameserversets: computeReconciliationAction / sortGameServersByPackedStrategy ---


def gs(name: str, state: str, node: str = "", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": f"2026-01-01T00:00:0{name[-1]}Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"metadata": meta, "status": {"state": state, "nodeName": node}}


def test_scale_down_removes_unscheduled_then_least_full_nodes_never_allocated() -> None:
    servers = [
        gs("a1", "Allocated", "n1"),
        gs("r1", "Ready", "n1"),
        gs("s1", "Scheduled", "n1"),
        gs("r2", "Ready", "n2"),
        gs("c3", "Creating"),
        gs("u4", "Unhealthy", "n2"),
        gs("d5", "Allocated", "n2", deleting=True),
    ]
    counts = {"n1": (1, 1), "n2": (1, 0)}
    add, doomed = reconciliation("Packed", servers, counts, target=2)
    names = [g["metadata"]["name"] for g in doomed]
    # Unhealthy always. Of the deletable, 3 are too many, less the Unhealthy one (Agones'
    # scheduleDeletion counts it against the excess; the next sync takes one more): the
    # unscheduled one, then the least full node's (n2: 1 Ready, n1: 1 Ready + 1 Allocated).
    assert add == 0 and names == ["u4", "c3", "r2"]
    # On one node, a not-yet-Ready GameServer goes before a Ready one.
    _, doomed = reconciliation("Packed", servers[:3], counts, target=2)
    assert [g["metadata"]["name"] for g in doomed] == ["s1"]
    # An Allocated GameServer being deleted does not count: one more is made at once.
    assert reconciliation("Packed", [gs("a1", "Allocated", "n1", deleting=True)], {}, 1)[0] == 1


# --- fleetautoscalers: applyBufferPolicy and the sync, beside another writer ---


async def test_a_buffer_autoscaler_undoes_another_writers_replicas(tmp_path: Path) -> None:
    """What the broker met when it raised replicas for its queue beside a FleetAutoscaler:
    the next sync puts allocated + bufferSize back, and the GameServers started for the
    queue are shut down before they are ever Ready."""
    async with cluster(tmp_path, nodes=6, time_scale=100, start_delay=30, autoscaler_sync=10) as (
        sim,
        api,
    ):
        custom = client.CustomObjectsApi(api)
        ended_unready: set[str] = set()
        replicas: list[int] = []

        def note_gs(change: Change) -> None:
            state = (change.obj.get("status") or {}).get("state")
            if (
                state == "Shutdown"
                and (change.prev or {}).get("status", {}).get("state") != "Ready"
            ):
                ended_unready.add(change.obj["metadata"]["name"])

        def note_fleet(change: Change) -> None:
            value = int((change.obj.get("spec") or {}).get("replicas") or 0)
            if not replicas or replicas[-1] != value:
                replicas.append(value)

        sim.store.subscribe(GAMESERVERS, note_gs)
        sim.store.subscribe(FLEETS, note_fleet)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        fas = {
            "apiVersion": "autoscaling.agones.dev/v1",
            "kind": "FleetAutoscaler",
            "metadata": {"name": "webui"},
            "spec": {
                "fleetName": "webui",
                "policy": {"type": "Buffer", "buffer": {"bufferSize": 1, "maxReplicas": 6}},
            },
        }
        await custom.create_namespaced_custom_object(
            "autoscaling.agones.dev", "v1", NS, "fleetautoscalers", fas
        )
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        await allocate(custom, "alice")
        for _ in range(2):  # a queue of 3: the broker asks for 1 + 3 + 1, twice
            await custom.patch_namespaced_custom_object(
                *AGONES, NS, "fleets", "webui", {"spec": {"replicas": 5}}, _content_type=MERGE
            )
            await sim.wait_for(lambda: replicas[-1] == 2)  # allocated 1 + bufferSize 1
        assert replicas[-4:] == [5, 2, 5, 2]
        assert len(ended_unready) >= 4  # started for the queue, shut down unready
