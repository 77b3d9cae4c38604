"""The simulator's Agones where security depends on it being exact (Agones v1.56.0).

A GameServer's pod gets its metadata from the pod template only (so a
NetworkPolicy must select labels of `spec.template.spec.template.metadata`
of a Fleet), and code in the pod can call the SDK's Ready() on itself,
which puts an Allocated GameServer back in the pool with its labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi import ManualClock
from tests.test_kubeapi import (
    AGONES,
    ALLOCATION,
    MERGE,
    NS,
    allocation,
    cluster,
    fleet_body,
    pod_body,
    ready_gameservers,
    status_of,
)

USER = "sdbroker.io/user"


def state_of(sim: Any, name: str) -> str:
    return ((sim.gameserver(NS, name) or {}).get("status") or {}).get("state", "")


def only_unclaimed(user: str) -> dict[str, Any]:
    """`allocation(user)` whose Ready selector refuses a GameServer that carries a user label."""
    body = allocation(user)
    body["spec"]["selectors"][1]["matchExpressions"] = [{"key": USER, "operator": "DoesNotExist"}]
    return body


async def test_gameserver_pod_metadata_comes_from_the_pod_template_only(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        fleet = fleet_body(replicas=1)
        template = fleet["spec"]["template"]
        template["metadata"] = {"labels": {"on-gameserver": "1"}, "annotations": {"gs-note": "1"}}
        template["spec"]["template"]["metadata"] = {
            "labels": {"on-pod": "1"},
            "annotations": {"pod-note": "1"},
        }
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet)
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        (gs,) = sim.gameservers(NS)
        name = gs["metadata"]["name"]
        assert gs["metadata"]["labels"]["on-gameserver"] == "1"
        assert gs["metadata"]["labels"]["agones.dev/fleet"] == "webui"

        pod = sim.pod(NS, name)
        assert pod["metadata"]["labels"] == {
            "on-pod": "1",
            "agones.dev/role": "gameserver",
            "agones.dev/gameserver": name,
            "agones.dev/safe-to-evict": "false",  # eviction.safe defaults to Never
        }
        assert pod["metadata"]["annotations"] == {
            "pod-note": "1",
            "agones.dev/container": "webui",
            "agones.dev/sdk-version": "1.56.0",
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
        }
        assert pod["spec"]["hostname"] == name

        # An allocation's metadata lands on the GameServer, never on its pod.
        await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        assert sim.gameserver(NS, name)["metadata"]["labels"][USER] == "alice"
        assert USER not in sim.pod(NS, name)["metadata"]["labels"]


async def test_eviction_labels_follow_the_gameserver_unless_the_template_sets_them(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, nodes=2, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        always = fleet_body("always", replicas=1)
        always["spec"]["template"]["spec"]["eviction"] = {"safe": "Always"}
        preset = fleet_body("preset", replicas=1)
        preset["spec"]["template"]["spec"]["template"]["metadata"] = {
            "labels": {"agones.dev/safe-to-evict": "true"}
        }
        for body in (always, preset):
            await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", body)
        for fleet, label, note in (("always", "true", "true"), ("preset", "true", "false")):
            await sim.wait_for(lambda f=fleet: len(ready_gameservers(sim, f)) == 1)
            (gs,) = ready_gameservers(sim, fleet)
            meta = sim.pod(NS, gs["metadata"]["name"])["metadata"]
            assert meta["labels"]["agones.dev/safe-to-evict"] == label
            assert meta["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == note


async def test_sdk_ready_puts_an_allocated_gameserver_back_in_the_pool(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        alice = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        name = alice["status"]["gameServerName"]
        assert state_of(sim, name) == "Allocated"

        # Code in the pod calls the sidecar on localhost: the state goes
        # RequestReady, then the controller makes it Ready; the labels stay.
        sim.sdk_ready(NS, name)
        assert state_of(sim, name) == "RequestReady"
        await sim.wait_for(lambda: state_of(sim, name) == "Ready")
        assert sim.gameserver(NS, name)["metadata"]["labels"][USER] == "alice"

        # A selector that does not look at the user label takes it for the next user...
        assert (
            await custom.create_namespaced_custom_object(
                *ALLOCATION, NS, "gameserverallocations", only_unclaimed("bob")
            )
        )["status"]["state"] == "UnAllocated"
        bob = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("bob")
        )
        # ...a DoesNotExist on the user label (above) never does.
        assert bob["status"]["gameServerName"] == name
        assert sim.gameserver(NS, name)["metadata"]["labels"][USER] == "bob"


async def test_sdk_ready_cannot_revive_an_unhealthy_or_deleted_gameserver(tmp_path: Path) -> None:
    clock = ManualClock()
    async with cluster(tmp_path, nodes=2, clock=clock) as (sim, api):
        custom = client.CustomObjectsApi(api)
        names = []
        for _ in range(2):
            gs = await custom.create_namespaced_custom_object(
                *AGONES,
                NS,
                "gameservers",
                {
                    "apiVersion": "agones.dev/v1",
                    "kind": "GameServer",
                    "metadata": {"generateName": "bare-"},
                    "spec": {
                        "template": {"spec": {"containers": [pod_body()["spec"]["containers"][0]]}}
                    },
                },
            )
            names.append(gs["metadata"]["name"])
        await sim.wait_for(lambda: all(state_of(sim, n) == "Ready" for n in names))
        unhealthy, deleting = names
        sim.vanish(NS, unhealthy)
        await sim.wait_for(lambda: state_of(sim, unhealthy) == "Unhealthy")
        await custom.patch_namespaced_custom_object(
            *AGONES, NS, "gameservers", deleting, {"status": {"state": "Allocated"}},
            _content_type=MERGE,
        )  # fmt: skip
        await custom.delete_namespaced_custom_object(*AGONES, NS, "gameservers", deleting)
        assert sim.gameserver(NS, deleting)["metadata"]["deletionTimestamp"]  # grace not over

        for name, state in ((unhealthy, "Unhealthy"), (deleting, "Allocated")):
            sim.sdk_ready(NS, name)
            assert state_of(sim, name) == state


async def test_allocation_selectors_are_checked_as_agones_does(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        for expression in (
            {"key": USER, "operator": "DoesNotExist", "values": ["alice"]},
            {"key": USER, "operator": "In"},
            {"key": USER, "operator": "Absent"},
        ):
            body = only_unclaimed("alice")
            body["spec"]["selectors"][1]["matchExpressions"] = [expression]
            with pytest.raises(ApiException) as refused:
                await custom.create_namespaced_custom_object(
                    *ALLOCATION, NS, "gameserverallocations", body
                )
            assert refused.value.status == 422
            assert "spec.selectors[1].labelSelector" in status_of(refused.value)["message"]
        good = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", only_unclaimed("alice")
        )
        assert good["status"]["state"] == "Allocated"
