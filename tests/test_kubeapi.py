"""The test Kubernetes API server, driven by the real `kubernetes_asyncio` client.

Everything goes through a kubeconfig file and the client's generated API, as
the kubernetes and agones backends will; the simulator's Python API is used
only to break things and to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi import (
    KubeSim,
    KubeSimThread,
    ManualClock,
    NodeSpec,
    PodFailure,
    ProcessRunner,
    buffer_replicas,
)
from tests.kubeapi.patch import json_patch, merge_patch
from tests.kubeapi.selectors import LabelSelector

NS = "sd"
STUB = Path(__file__).resolve().parents[1] / "webui-image" / "stub" / "webui_stub.py"
AGONES = ("agones.dev", "v1")
ALLOCATION = ("allocation.agones.dev", "v1")
MERGE = "application/merge-patch+json"


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[KubeSim, client.ApiClient]]:
    """A simulator and a client configured from the kubeconfig file it writes."""
    async with KubeSim(**options) as sim:
        kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            yield sim, api


def pod_body(
    *,
    gpus: int = 1,
    labels: dict[str, str] | None = None,
    probe: bool = True,
    restart: str = "Always",
    image: str = "sdbroker/webui:1.0",
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "webui",
        "image": image,
        "ports": [{"containerPort": 7860}],
        # A quantity as a string: an Agones CRD (Fleet, GameServer) refuses a number there.
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
    }
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/internal/ping", "port": 7860}}
    return {
        "metadata": {"generateName": "webui-", "labels": labels or {"app": "webui"}},
        "spec": {"containers": [container], "restartPolicy": restart},
    }


def is_ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def waiting_reason(pod: dict[str, Any] | None) -> str | None:
    return (container(pod).get("state") or {}).get("waiting", {}).get("reason")


async def next_events(stream: Any, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Read watch events until one satisfies `until` (bounded by a real-time guard)."""
    seen = []
    async with asyncio.timeout(10):
        async for event in stream:
            seen.append(event)
            if until(event):
                return seen
    raise AssertionError(f"watch ended first: {[e['type'] for e in seen]}")


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


# --- core pods ------------------------------------------------------------------------------


async def test_discovery_version_and_auth(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (sim, api):
        version = await client.VersionApi(api).get_code()
        assert version.major == "1" and version.git_version.startswith("v1.")
        groups = await client.ApisApi(api).get_api_versions()
        assert {"agones.dev", "allocation.agones.dev", "autoscaling.agones.dev"} <= {
            g.name for g in groups.groups
        }
        core = await client.CoreV1Api(api).get_api_resources()
        assert {"pods", "pods/status", "nodes", "events"} <= {r.name for r in core.resources}
        nodes = await client.CoreV1Api(api).list_node()
        assert nodes.items[0].status.capacity["nvidia.com/gpu"] == "1"
        async with (
            aiohttp.ClientSession() as session,
            session.get(sim.url + "/api/v1/pods") as resp,
        ):
            assert resp.status == 401  # no token


async def test_pod_create_get_list_selectors_patch_and_delete(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=3) as (sim, api):
        v1 = client.CoreV1Api(api)
        made = {}
        for state, user in (("ready", None), ("claimed", "alice"), ("warming", None)):
            labels = {"app": "webui", "state": state, **({"user": user} if user else {})}
            pod = await v1.create_namespaced_pod(NS, pod_body(labels=labels))
            made[state] = pod
        assert made["ready"].metadata.name.startswith("webui-") and made["ready"].metadata.uid
        assert made["ready"].status.phase == "Pending"
        rvs = [int(p.metadata.resource_version) for p in made.values()]
        assert rvs == sorted(rvs) and len(set(rvs)) == 3

        async def names(**query: Any) -> set[str]:
            listed = await v1.list_namespaced_pod(NS, **query)
            assert int(listed.metadata.resource_version) >= rvs[-1]
            return {p.metadata.labels["state"] for p in listed.items}

        assert await names(label_selector="app=webui") == {"ready", "claimed", "warming"}
        assert await names(label_selector="state!=claimed") == {"ready", "warming"}
        assert await names(label_selector="state in (ready, warming)") == {"ready", "warming"}
        assert await names(label_selector="state notin (ready),app==webui") == {
            "claimed",
            "warming",
        }
        assert await names(label_selector="user") == {"claimed"}
        assert await names(label_selector="!user") == {"ready", "warming"}
        assert await names(field_selector=f"metadata.name={made['ready'].metadata.name}") == {
            "ready"
        }
        assert await names(field_selector="status.phase!=Failed") == {"ready", "claimed", "warming"}
        with pytest.raises(ApiException) as bad:
            await v1.list_namespaced_pod(NS, field_selector="status.podIPs=x")
        assert bad.value.status == 400

        name = made["ready"].metadata.name
        got = await v1.read_namespaced_pod(name, NS)
        assert got.metadata.uid == made["ready"].metadata.uid

        # A claim: strategic-merge patch (the client's default for a dict) with a resourceVersion precondition.
        rv = got.metadata.resource_version
        claim = {
            "metadata": {
                "resourceVersion": rv,
                "labels": {"state": "claimed", "user": "bob"},
                "annotations": {"sdbroker.io/user": "bob@example.com"},
            }
        }
        patched = await v1.patch_namespaced_pod(name, NS, claim)
        assert patched.metadata.labels["user"] == "bob" and int(
            patched.metadata.resource_version
        ) > int(rv)
        with pytest.raises(ApiException) as conflict:
            await v1.patch_namespaced_pod(name, NS, claim)  # same, now stale, resourceVersion
        assert conflict.value.status == 409
        body = status_of(conflict.value)
        assert (
            body["kind"] == "Status"
            and body["reason"] == "Conflict"
            and body["details"]["name"] == name
        )
        with pytest.raises(ApiException) as replaced:
            await v1.replace_namespaced_pod(name, NS, got)  # PUT of the old version
        assert replaced.value.status == 409

        # JSON patch guarded by a test op: a stale version fails with 422, as the apiserver answers.
        stale = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/metadata/labels/state", "value": "ready"},
        ]
        with pytest.raises(ApiException) as failed:
            await v1.patch_namespaced_pod(name, NS, stale)
        assert failed.value.status == 422 and "test failed" in status_of(failed.value)["message"]
        stale[0]["value"] = patched.metadata.resource_version
        stale.append({"op": "remove", "path": "/metadata/labels/user"})
        freed = await v1.patch_namespaced_pod(name, NS, stale)
        assert freed.metadata.labels == {"app": "webui", "state": "ready"}

        merged = await v1.patch_namespaced_pod(
            name, NS, {"metadata": {"annotations": {"sdbroker.io/user": None}}}, _content_type=MERGE
        )
        assert "sdbroker.io/user" not in (merged.metadata.annotations or {})
        with pytest.raises(ApiException) as invalid:
            await v1.patch_namespaced_pod(
                name, NS, {"metadata": {"labels": {"user": "bob@example.com"}}}
            )
        assert invalid.value.status == 422  # not a valid label value
        with pytest.raises(ApiException) as immutable:
            await v1.patch_namespaced_pod(name, NS, {"spec": {"restartPolicy": "Never"}})
        assert (
            immutable.value.status == 422 and "Forbidden" in status_of(immutable.value)["message"]
        )

        await sim.wait_for(lambda: is_ready(sim.pod(NS, name)))
        deleting = await v1.delete_namespaced_pod(name, NS, grace_period_seconds=30)
        assert deleting.metadata.deletion_timestamp is not None
        await sim.wait_for(lambda: sim.pod(NS, name) is None)
        with pytest.raises(ApiException) as missing:
            await v1.read_namespaced_pod(name, NS)
        assert missing.value.status == 404 and status_of(missing.value)["reason"] == "NotFound"
        with pytest.raises(ApiException) as precondition:
            uid = made["claimed"].metadata.uid[::-1]
            await v1.delete_namespaced_pod(
                made["claimed"].metadata.name,
                NS,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
            )
        assert precondition.value.status == 409


async def test_watch_sees_lifecycle_in_order_and_resumes(tmp_path: Path) -> None:
    async with cluster(tmp_path, start_delay=(60, 90), ready_delay=20, time_scale=600) as (
        sim,
        api,
    ):
        v1 = client.CoreV1Api(api)
        listed = await v1.list_namespaced_pod(NS)
        async with watch.Watch() as w:
            stream = w.stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=3600,
            )
            pod = await v1.create_namespaced_pod(NS, pod_body())
            name = pod.metadata.name
            events = await next_events(stream, lambda e: is_ready(e["raw_object"]))
            await v1.delete_namespaced_pod(name, NS, grace_period_seconds=5)
            events += await next_events(stream, lambda e: e["type"] == "DELETED")
        types = [e["type"] for e in events]
        assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) == {"MODIFIED"}
        raw = [e["raw_object"] for e in events]
        assert [int(o["metadata"]["resourceVersion"]) for o in raw] == sorted(
            int(o["metadata"]["resourceVersion"]) for o in raw
        )
        ready_at = next(i for i, o in enumerate(raw) if is_ready(o))
        assert raw[ready_at]["status"]["phase"] == "Running" and raw[ready_at]["status"][
            "podIP"
        ].startswith("127.")
        assert any(waiting_reason(o) == "ContainerCreating" for o in raw[:ready_at])
        assert raw[-2]["metadata"].get("deletionTimestamp")  # graceful: MODIFIED then DELETED

        # Resume from the ADDED event's version: the same history after it is replayed.
        async with watch.Watch() as w:
            replay = w.stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=raw[0]["metadata"]["resourceVersion"],
                timeout_seconds=3600,
            )
            again = await next_events(replay, lambda e: e["type"] == "DELETED")
        assert [e["raw_object"]["metadata"]["resourceVersion"] for e in again] == [
            o["metadata"]["resourceVersion"] for o in raw[1:]
        ]


async def test_watch_from_compacted_version_is_410_gone(tmp_path: Path) -> None:
    async with cluster(tmp_path, history_size=5) as (sim, api):
        v1 = client.CoreV1Api(api)
        old = (await v1.list_namespaced_pod(NS)).metadata.resource_version
        for _ in range(8):
            await v1.create_namespaced_pod(NS, pod_body(gpus=0, probe=False))
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as gone:
                async for _ in w.stream(
                    v1.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5
                ):
                    pass
        assert gone.value.status == 410 and "too old resource version" in gone.value.reason
        sim.compact()  # everything before now is too old, even the latest list's version
        latest = (await v1.list_namespaced_pod(NS)).metadata.resource_version
        headers = {"Authorization": f"Bearer {sim.token}"}
        url = f"{sim.url}/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={latest}"
        async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
            assert resp.status == 200  # as from a real apiserver: 200, then an ERROR event
            event = json.loads(await resp.content.readline())
        assert (
            event["type"] == "ERROR"
            and event["object"]["code"] == 410
            and event["object"]["reason"] == "Expired"
        )


async def test_bookmarks_arrive_and_carry_the_version(tmp_path: Path) -> None:
    async with cluster(tmp_path, bookmark_interval=60, time_scale=600) as (sim, api):
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_pod(NS, pod_body(gpus=0, probe=False))
        async with watch.Watch() as w:
            stream = w.stream(
                v1.list_namespaced_pod, NS, allow_watch_bookmarks=True, timeout_seconds=3600
            )
            events = await next_events(stream, lambda e: e["type"] == "BOOKMARK")
            assert events[0]["type"] == "ADDED"  # no resourceVersion: the current state first
            bookmark = events[-1]["raw_object"]
            assert (
                bookmark["kind"] == "Pod"
                and int(bookmark["metadata"]["resourceVersion"]) >= sim.store.resource_version - 10
            )
            assert w.resource_version == bookmark["metadata"]["resourceVersion"]
        async with (
            watch.Watch() as w
        ):  # the streaming-list form: initial state, then a marked bookmark
            stream = w.stream(
                v1.list_namespaced_pod,
                NS,
                send_initial_events=True,
                resource_version_match="NotOlderThan",
                allow_watch_bookmarks=True,
                timeout_seconds=3600,
            )
            events = await next_events(stream, lambda e: e["type"] == "BOOKMARK")
        assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
        assert events[-1]["raw_object"]["metadata"]["annotations"] == {
            "k8s.io/initial-events-end": "true"
        }


async def test_label_selector_watch_sees_objects_leave_and_enter(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (sim, api):
        v1 = client.CoreV1Api(api)
        pod = await v1.create_namespaced_pod(
            NS, pod_body(gpus=0, probe=False, labels={"state": "ready"})
        )
        name = pod.metadata.name
        async with watch.Watch() as w:
            stream = w.stream(
                v1.list_namespaced_pod, NS, label_selector="state=ready", timeout_seconds=3600
            )
            await next_events(stream, lambda e: e["type"] == "ADDED")
            await v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"state": "claimed"}}})
            left = await next_events(stream, lambda e: e["type"] == "DELETED")
            await v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"state": "ready"}}})
            back = await next_events(stream, lambda e: e["type"] == "ADDED")
        assert left[-1]["object"].metadata.labels["state"] == "claimed"
        assert back[-1]["object"].metadata.name == name


# --- capacity and failures -----------------------------------------------------------------


async def test_pod_beyond_gpu_capacity_stays_pending_unschedulable(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1, gpus_per_node=1) as (sim, api):
        v1 = client.CoreV1Api(api)
        first = await v1.create_namespaced_pod(NS, pod_body())
        second = await v1.create_namespaced_pod(NS, pod_body())
        await sim.wait_for(lambda: is_ready(sim.pod(NS, first.metadata.name)))
        pending = await v1.read_namespaced_pod(second.metadata.name, NS)
        assert pending.status.phase == "Pending" and pending.spec.node_name is None
        (scheduled,) = pending.status.conditions
        assert (scheduled.type, scheduled.status, scheduled.reason) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        assert scheduled.message.startswith(
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        )
        events = await v1.list_namespaced_event(
            NS, field_selector=f"involvedObject.name={second.metadata.name}"
        )
        assert [e.reason for e in events.items] == ["FailedScheduling"]
        selective = await v1.create_namespaced_pod(
            NS,
            {
                **pod_body(gpus=0),
                "spec": {**pod_body(gpus=0)["spec"], "nodeSelector": {"pool": "a100"}},
            },
        )
        await sim.wait_for(
            lambda: (
                "didn't match Pod's node affinity/selector"
                in json.dumps(sim.pod(NS, selective.metadata.name))
            )
        )

        await v1.delete_namespaced_pod(first.metadata.name, NS, grace_period_seconds=0)
        await sim.wait_for(lambda: is_ready(sim.pod(NS, second.metadata.name)))
        sim.add_node("node-2", gpus=2, labels={"pool": "a100"})
        await sim.wait_for(lambda: is_ready(sim.pod(NS, selective.metadata.name)))


FAST = {"nodes": 2, "time_scale": 200, "backoff": (2.0, 8.0), "image_pull_retry": 1.0}


async def test_image_pull_error_then_backoff(tmp_path: Path) -> None:
    async with cluster(tmp_path, **FAST) as (sim, api):
        sim.inject_pod_failure(PodFailure.IMAGE_PULL, image="*:broken")
        pod = await client.CoreV1Api(api).create_namespaced_pod(
            NS, pod_body(image="sdbroker/webui:broken")
        )
        name = pod.metadata.name
        await sim.wait_for(lambda: waiting_reason(sim.pod(NS, name)) == "ErrImagePull")
        await sim.wait_for(lambda: waiting_reason(sim.pod(NS, name)) == "ImagePullBackOff")
        pod_now = sim.pod(NS, name)
        assert pod_now["status"]["phase"] == "Pending"
        assert (
            container(pod_now)["state"]["waiting"]["message"]
            == 'Back-off pulling image "sdbroker/webui:broken"'
        )
        assert {"Failed", "BackOff"} <= {e["reason"] for e in sim.events(NS, name)}


async def test_crash_loop_backoff_with_growing_restarts(tmp_path: Path) -> None:
    async with cluster(tmp_path, **FAST) as (sim, api):
        sim.inject_pod_failure(PodFailure.CRASH_LOOP, selector="app=webui", count=1, crash_after=1)
        name = (await client.CoreV1Api(api).create_namespaced_pod(NS, pod_body())).metadata.name
        await sim.wait_for(
            lambda: (
                container(sim.pod(NS, name)).get("restartCount", 0) >= 2
                and waiting_reason(sim.pod(NS, name)) == "CrashLoopBackOff"
            )
        )
        status = sim.pod(NS, name)["status"]
        assert status["phase"] == "Running" and not is_ready(sim.pod(NS, name))
        assert container(sim.pod(NS, name))["lastState"]["terminated"]["exitCode"] == 1
        healthy = (await client.CoreV1Api(api).create_namespaced_pod(NS, pod_body())).metadata.name
        await sim.wait_for(
            lambda: is_ready(sim.pod(NS, healthy))
        )  # count=1: only the first pod crashes


async def test_oom_killed_restarts_or_fails(tmp_path: Path) -> None:
    async with cluster(tmp_path, **FAST) as (sim, api):
        v1 = client.CoreV1Api(api)
        always = (await v1.create_namespaced_pod(NS, pod_body())).metadata.name
        never = (await v1.create_namespaced_pod(NS, pod_body(restart="Never"))).metadata.name
        await sim.wait_for(lambda: is_ready(sim.pod(NS, always)) and is_ready(sim.pod(NS, never)))
        sim.oom_kill(NS, always)
        sim.oom_kill(NS, never)
        await sim.wait_for(
            lambda: (
                container(sim.pod(NS, always)).get("restartCount") == 1
                and is_ready(sim.pod(NS, always))
            )
        )
        assert container(sim.pod(NS, always))["lastState"]["terminated"]["reason"] == "OOMKilled"
        failed = await v1.read_namespaced_pod(never, NS)
        assert failed.status.phase == "Failed"
        assert failed.status.container_statuses[0].state.terminated.reason == "OOMKilled"
        assert failed.status.container_statuses[0].state.terminated.exit_code == 137


async def test_eviction_fails_the_pod_and_frees_its_gpu(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1) as (sim, api):
        v1 = client.CoreV1Api(api)
        first = (await v1.create_namespaced_pod(NS, pod_body())).metadata.name
        await sim.wait_for(lambda: is_ready(sim.pod(NS, first)))
        waiting = (await v1.create_namespaced_pod(NS, pod_body())).metadata.name
        sim.evict(NS, first)
        evicted = await v1.read_namespaced_pod(first, NS)
        assert (evicted.status.phase, evicted.status.reason) == ("Failed", "Evicted")
        assert "low on resource" in evicted.status.message
        assert any(
            c.type == "DisruptionTarget" and c.status == "True" for c in evicted.status.conditions
        )
        await sim.wait_for(lambda: is_ready(sim.pod(NS, waiting)))


async def test_vanished_pod_and_failed_node_are_deleted(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as (sim, api):
        v1 = client.CoreV1Api(api)
        names = [(await v1.create_namespaced_pod(NS, pod_body())).metadata.name for _ in range(2)]
        await sim.wait_for(lambda: all(is_ready(sim.pod(NS, n)) for n in names))
        async with watch.Watch() as w:
            stream = w.stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=sim.store.resource_version,
                timeout_seconds=3600,
            )
            sim.vanish(NS, names[0])
            (gone,) = await next_events(stream, lambda e: e["type"] == "DELETED")
            assert gone["object"].metadata.name == names[0]
            node = sim.pod(NS, names[1])["spec"]["nodeName"]
            assert sim.fail_node(node) == [f"{NS}/{names[1]}"]
            (gone,) = await next_events(stream, lambda e: e["type"] == "DELETED")
            assert gone["object"].metadata.name == names[1]
        assert [n["metadata"]["name"] for n in sim.nodes()] != [] and node not in {
            n["metadata"]["name"] for n in sim.nodes()
        }


async def test_injected_api_errors(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (sim, api):
        v1 = client.CoreV1Api(api)
        name = (await v1.create_namespaced_pod(NS, pod_body(gpus=0))).metadata.name
        sim.inject_api_error(500, verb="list", resource="pods")
        sim.inject_api_error(503, verb="get", name=name, count=2, retry_after=1)
        sim.inject_api_error(409, verb="patch", resource="pods")
        with pytest.raises(ApiException) as e500:
            await v1.list_namespaced_pod(NS)
        assert e500.value.status == 500 and status_of(e500.value)["reason"] == "InternalError"
        assert len((await v1.list_namespaced_pod(NS)).items) == 1  # only the next request failed
        for _ in range(2):
            with pytest.raises(ApiException) as e503:
                await v1.read_namespaced_pod(name, NS)
            assert e503.value.status == 503 and e503.value.headers["Retry-After"] == "1"
        await v1.read_namespaced_pod(name, NS)
        with pytest.raises(ApiException) as e409:
            await v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"a": "b"}}})
        assert e409.value.status == 409
        sim.inject_api_error(410, verb="watch", resource="pods")
        async with watch.Watch() as w:
            with pytest.raises(ApiException) as e410:
                async for _ in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=60):
                    pass
        assert e410.value.status == 410


async def test_dropped_watches_end_cleanly_or_abruptly(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (sim, api):
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_pod(NS, pod_body(gpus=0, probe=False))
        for abrupt in (False, True):
            async with watch.Watch() as w:
                stream = w.stream(v1.list_namespaced_pod, NS, timeout_seconds=3600)
                await next_events(stream, lambda e: e["type"] == "ADDED")
                assert sim.open_watches == 1
                assert sim.drop_watches(abrupt=abrupt) == 1
                if abrupt:
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await stream.__anext__()
                else:
                    with pytest.raises(StopAsyncIteration):
                        await stream.__anext__()
            await sim.wait_for(lambda: sim.open_watches == 0)


async def test_manual_clock_moves_only_when_advanced(tmp_path: Path) -> None:
    clock = ManualClock()
    async with cluster(tmp_path, clock=clock, start_delay=90) as (sim, api):
        name = (
            await client.CoreV1Api(api).create_namespaced_pod(NS, pod_body(probe=False))
        ).metadata.name
        await sim.wait_for(lambda: waiting_reason(sim.pod(NS, name)) == "ContainerCreating")
        await clock.advance(89)
        assert sim.pod(NS, name)["status"]["phase"] == "Pending"
        await clock.advance(1)
        await sim.wait_for(lambda: is_ready(sim.pod(NS, name)))
        assert sim.pod(NS, name)["status"]["startTime"] == "2025-01-01T00:00:00Z"


# --- real processes --------------------------------------------------------------------------


async def test_process_runner_serves_the_stub_webui_on_the_pod_ip(tmp_path: Path) -> None:
    runner = ProcessRunner(
        [
            sys.executable,
            str(STUB),
            "--host",
            "{ip}",
            "--port",
            "{port}",
            "--pod-id",
            "{name}",
            "--outdir",
            str(tmp_path),
        ],
        log_dir=tmp_path,
    )
    async with cluster(
        tmp_path, nodes=2, process_runner=runner, backoff=(1.0, 2.0), time_scale=10
    ) as (sim, api):
        v1 = client.CoreV1Api(api)
        names = [(await v1.create_namespaced_pod(NS, pod_body())).metadata.name for _ in range(2)]
        await sim.wait_for(lambda: all(is_ready(sim.pod(NS, n)) for n in names), within=30)
        pods = [await v1.read_namespaced_pod(n, NS) for n in names]
        assert len({p.status.pod_ip for p in pods}) == 2
        async with aiohttp.ClientSession() as session:
            for pod in pods:
                async with session.get(f"http://{pod.status.pod_ip}:7860/stub/whoami") as resp:
                    assert (await resp.json())["pod"] == pod.metadata.name

            process = sim.process(NS, names[0])
            assert process is not None and process.proc is not None
            process.kill()  # the WebUI dies: the container terminates and is restarted
            await sim.wait_for(
                lambda: (
                    container(sim.pod(NS, names[0])).get("restartCount") == 1
                    and is_ready(sim.pod(NS, names[0]))
                ),
                within=30,
            )
            assert container(sim.pod(NS, names[0]))["lastState"]["terminated"]["exitCode"] == 137

            restarted = sim.process(NS, names[1])
            assert restarted is not None and restarted.proc is not None
            await v1.delete_namespaced_pod(names[1], NS)
            await sim.wait_for(lambda: sim.pod(NS, names[1]) is None, within=15)
            assert restarted.proc.returncode is not None  # stopped with the pod
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://{pods[1].status.pod_ip}:7860/internal/ping")


# --- Agones ------------------------------------------------------------------------------------


def fleet_body(name: str = "webui", replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "agones.dev/v1",
        "kind": "Fleet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"sdbroker.io/profile": "sd15"}},
                "spec": {
                    "ports": [{"name": "http", "containerPort": 7860, "protocol": "TCP"}],
                    "template": {"spec": {"containers": [pod_body()["spec"]["containers"][0]]}},
                },
            },
        },
    }


def allocation(user: str, fleet: str = "webui") -> dict[str, Any]:
    return {
        "apiVersion": "allocation.agones.dev/v1",
        "kind": "GameServerAllocation",
        "spec": {
            "selectors": [
                {
                    "matchLabels": {"agones.dev/fleet": fleet, "sdbroker.io/user": user},
                    "gameServerState": "Allocated",
                },
                {"matchLabels": {"agones.dev/fleet": fleet}, "gameServerState": "Ready"},
            ],
            "metadata": {
                "labels": {"sdbroker.io/user": user},
                "annotations": {"sdbroker.io/user": f"{user}@example.com"},
            },
        },
    }


def ready_gameservers(sim: KubeSim, fleet: str = "webui") -> list[dict[str, Any]]:
    return [
        g
        for g in sim.gameservers(NS, f"agones.dev/fleet={fleet}")
        if g["status"]["state"] == "Ready"
    ]


async def test_fleet_makes_ready_gameservers_and_allocation_is_idempotent(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=3, start_delay=60, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=2))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 2)
        listed = await custom.list_namespaced_custom_object(
            *AGONES, NS, "gameservers", label_selector="agones.dev/fleet=webui"
        )
        gs = listed["items"][0]
        assert gs["metadata"]["name"].startswith("webui-")
        # status.address is the NODE's (Agones' address()); the pod IP is a PodIP entry.
        assert gs["status"]["address"].endswith(".255")
        assert {
            "type": "PodIP",
            "address": sim.pod(NS, gs["metadata"]["name"])["status"]["podIP"],
        } in gs["status"]["addresses"]
        assert gs["status"]["ports"][0]["name"] == "http" and gs["status"]["nodeName"].startswith(
            "node-"
        )
        assert (
            sim.pod(NS, gs["metadata"]["name"])["metadata"]["labels"]["agones.dev/gameserver"]
            == gs["metadata"]["name"]
        )

        first = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        status = first["status"]
        assert (
            status["state"] == "Allocated"
            and status["gameServerName"]
            and status["address"].endswith(".255")  # the node's, as on the GameServer
        )
        assert status["ports"] and status["nodeName"]
        again = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        assert (
            again["status"]["gameServerName"] == status["gameServerName"]
        )  # a retry: same GameServer
        allocated = await custom.get_namespaced_custom_object(
            *AGONES, NS, "gameservers", status["gameServerName"]
        )
        assert allocated["status"]["state"] == "Allocated"
        assert allocated["metadata"]["labels"]["sdbroker.io/user"] == "alice"
        assert allocated["metadata"]["annotations"]["sdbroker.io/user"] == "alice@example.com"
        assert "agones.dev/last-allocated" in allocated["metadata"]["annotations"]

        bob = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("bob")
        )
        assert (
            bob["status"]["state"] == "Allocated"
            and bob["status"]["gameServerName"] != status["gameServerName"]
        )
        carol = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("carol")
        )
        assert carol["status"]["state"] == "UnAllocated" and not carol["status"]["gameServerName"]

        fleet = await custom.get_namespaced_custom_object(*AGONES, NS, "fleets", "webui")
        assert fleet["status"]["allocatedReplicas"] == 2 and fleet["status"]["readyReplicas"] == 0
        # Scaling down never removes Allocated GameServers.
        await custom.patch_namespaced_custom_object(
            *AGONES, NS, "fleets", "webui", {"spec": {"replicas": 0}}, _content_type=MERGE
        )
        await asyncio.sleep(0.05)
        assert {g["metadata"]["name"] for g in sim.gameservers(NS)} == {
            status["gameServerName"],
            bob["status"]["gameServerName"],
        }


async def test_deleted_gameserver_is_replaced(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=3, start_delay=30, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=2))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 2)
        name = (
            await custom.create_namespaced_custom_object(
                *ALLOCATION, NS, "gameserverallocations", allocation("alice")
            )
        )["status"]["gameServerName"]
        deleting = await custom.delete_namespaced_custom_object(*AGONES, NS, "gameservers", name)
        assert deleting["metadata"]["deletionTimestamp"]
        await sim.wait_for(lambda: sim.gameserver(NS, name) is None and sim.pod(NS, name) is None)
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 2)
        assert name not in {g["metadata"]["name"] for g in sim.gameservers(NS)}
        # A lost backing pod makes its GameServer Unhealthy; the fleet replaces it too.
        victim = ready_gameservers(sim)[0]["metadata"]["name"]
        sim.vanish(NS, victim)
        await sim.wait_for(
            lambda: sim.gameserver(NS, victim) is None and len(ready_gameservers(sim)) == 2
        )


async def test_fleet_autoscaler_buffer_policy_scales_the_fleet(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=10, time_scale=600, autoscaler_sync=30) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        fas = {
            "apiVersion": "autoscaling.agones.dev/v1",
            "kind": "FleetAutoscaler",
            "metadata": {"name": "webui"},
            "spec": {
                "fleetName": "webui",
                "policy": {
                    "type": "Buffer",
                    "buffer": {"bufferSize": 2, "minReplicas": 2, "maxReplicas": 5},
                },
            },
        }
        bad = json.loads(json.dumps(fas))
        bad["spec"]["policy"]["buffer"]["bufferSize"] = 0
        with pytest.raises(ApiException) as invalid:
            await custom.create_namespaced_custom_object(
                "autoscaling.agones.dev", "v1", NS, "fleetautoscalers", bad
            )
        assert invalid.value.status == 422 and "bufferSize" in status_of(invalid.value)["message"]
        await custom.create_namespaced_custom_object(
            "autoscaling.agones.dev", "v1", NS, "fleetautoscalers", fas
        )
        await sim.wait_for(
            lambda: len(ready_gameservers(sim)) == 2
        )  # min 2, buffer 2, none allocated

        def replicas() -> int:
            return int((sim.fleet(NS, "webui") or {}).get("spec", {}).get("replicas", -1))

        # replicas = allocated + bufferSize, at most maxReplicas
        for users, want_replicas, want_ready in ((("u1", "u2"), 4, 2), (("u3", "u4"), 5, 1)):
            for user in users:
                reply = await custom.create_namespaced_custom_object(
                    *ALLOCATION, NS, "gameserverallocations", allocation(user)
                )
                assert reply["status"]["state"] == "Allocated"
            await sim.wait_for(
                lambda r=want_replicas, n=want_ready: (
                    replicas() == r and len(ready_gameservers(sim)) == n
                )
            )
        sim.autoscale_now(NS, "webui")  # a sync now, with the fleet's status settled
        status = (
            await custom.get_namespaced_custom_object(
                "autoscaling.agones.dev", "v1", NS, "fleetautoscalers", "webui"
            )
        )["status"]
        assert status["ableToScale"] and status["desiredReplicas"] == 5 and status["scalingLimited"]
        scale = await custom.get_namespaced_custom_object_scale(*AGONES, NS, "fleets", "webui")
        assert scale["spec"]["replicas"] == 5


async def test_allocation_contention_and_lost_response(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2, time_scale=600) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=2))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 2)
        sim.inject_allocation_contention()
        contention = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        assert contention["status"]["state"] == "Contention"
        sim.drop_allocation_responses()
        with pytest.raises(aiohttp.ClientError):
            await custom.create_namespaced_custom_object(
                *ALLOCATION, NS, "gameserverallocations", allocation("alice")
            )
        # agones#607: it was allocated anyway; the Allocated selector finds it on retry.
        (orphan,) = sim.gameservers(NS, "sdbroker.io/user=alice")
        assert orphan["status"]["state"] == "Allocated"
        retry = await custom.create_namespaced_custom_object(
            *ALLOCATION, NS, "gameserverallocations", allocation("alice")
        )
        assert retry["status"]["gameServerName"] == orphan["metadata"]["name"]


async def test_gameserver_shutdown_stuck_image_and_fleet_cascade(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=3, time_scale=600, image_pull_retry=1) as (sim, api):
        custom = client.CustomObjectsApi(api)
        # By pod name: Agones puts no agones.dev/fleet label on a GameServer's pod.
        sim.inject_pod_failure(PodFailure.IMAGE_PULL, name="broken-*")
        await custom.create_namespaced_custom_object(
            *AGONES, NS, "fleets", fleet_body("broken", replicas=1)
        )
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=1))
        await sim.wait_for(lambda: len(ready_gameservers(sim)) == 1)
        (stuck,) = sim.gameservers(NS, "agones.dev/fleet=broken")
        await sim.wait_for(
            lambda: waiting_reason(sim.pod(NS, stuck["metadata"]["name"])) == "ImagePullBackOff"
        )
        assert (
            sim.gameserver(NS, stuck["metadata"]["name"])["status"]["state"] == "Scheduled"
        )  # Agones says nothing

        # The SDK's Shutdown(): the GameServer is deleted and the fleet makes a new one.
        name = ready_gameservers(sim)[0]["metadata"]["name"]
        await custom.patch_namespaced_custom_object(
            *AGONES, NS, "gameservers", name, {"status": {"state": "Shutdown"}}, _content_type=MERGE
        )
        await sim.wait_for(
            lambda: sim.gameserver(NS, name) is None and len(ready_gameservers(sim)) == 1
        )

        await custom.delete_namespaced_custom_object(*AGONES, NS, "fleets", "webui")
        await sim.wait_for(
            lambda: (
                not sim.gameservers(NS, "agones.dev/fleet=webui")
                and not [p for p in sim.pods(NS) if p["metadata"]["name"].startswith("webui-")]
            )
        )


async def test_custom_object_patch_needs_an_explicit_merge_content_type(tmp_path: Path) -> None:
    """For a dict body the client picks application/json-patch+json, which a real apiserver rejects."""
    async with cluster(tmp_path) as (sim, api):
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(*AGONES, NS, "fleets", fleet_body(replicas=0))
        with pytest.raises(ApiException) as wrong:
            await custom.patch_namespaced_custom_object(
                *AGONES, NS, "fleets", "webui", {"spec": {"replicas": 1}}
            )
        assert wrong.value.status == 400
        with pytest.raises(ApiException) as strategic:
            await custom.patch_namespaced_custom_object(
                *AGONES,
                NS,
                "fleets",
                "webui",
                {"spec": {"replicas": 1}},
                _content_type="application/strategic-merge-patch+json",
            )
        assert strategic.value.status == 415
        fleet = await custom.patch_namespaced_custom_object(
            *AGONES, NS, "fleets", "webui", {"spec": {"replicas": 1}}, _content_type=MERGE
        )
        assert fleet["spec"]["replicas"] == 1
        fleet = await custom.patch_namespaced_custom_object(
            *AGONES,
            NS,
            "fleets",
            "webui",
            [{"op": "replace", "path": "/spec/replicas", "value": 0}],
        )
        assert fleet["spec"]["replicas"] == 0


async def test_gameserver_watch_and_node_spec_objects(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=[NodeSpec("gpu-a", 2, {"pool": "a"})], time_scale=600) as (
        sim,
        api,
    ):
        custom = client.CustomObjectsApi(api)
        since = (await custom.list_namespaced_custom_object(*AGONES, NS, "gameservers"))[
            "metadata"
        ]["resourceVersion"]
        async with watch.Watch() as w:
            stream = w.stream(
                custom.list_namespaced_custom_object,
                *AGONES,
                NS,
                "gameservers",
                resource_version=since,
                timeout_seconds=3600,
            )
            await custom.create_namespaced_custom_object(
                *AGONES, NS, "fleets", fleet_body(replicas=1)
            )
            events = await next_events(
                stream, lambda e: e["object"].get("status", {}).get("state") == "Ready"
            )
        states = [e["object"]["status"]["state"] for e in events]
        assert events[0]["type"] == "ADDED" and states[-3:] == [
            "Scheduled",
            "RequestReady",
            "Ready",
        ]
        assert events[-1]["object"]["status"]["nodeName"] == "gpu-a"


def test_thread_mode_and_http_admin_endpoint() -> None:
    """A simulator on its own loop serves a test thread that blocks, and takes orders over HTTP."""
    with KubeSimThread(nodes=1, time_scale=600) as running:
        base = running.url
        headers = {
            "Authorization": f"Bearer {running.sim.token}",
            "Content-Type": "application/json",
        }

        def call(method: str, path: str, body: Any = None) -> Any:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())

        pod = call("POST", f"/api/v1/namespaces/{NS}/pods", pod_body())
        name = pod["metadata"]["name"]
        deadline = time.monotonic() + 10
        while not is_ready(call("GET", f"/api/v1/namespaces/{NS}/pods/{name}")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        call("POST", "/_sim/evict", {"namespace": NS, "name": name})
        assert call("GET", f"/api/v1/namespaces/{NS}/pods/{name}")["status"]["reason"] == "Evicted"
        state = call("GET", "/_sim/state")["result"]
        assert state["pods"] == {"Failed": 1} and state["gpus"]["node-1"] == {
            "capacity": 1,
            "used": 0,
        }
        assert running.call(lambda sim: sim.pod(NS, name)["status"]["phase"]) == "Failed"


# --- pure parts --------------------------------------------------------------------------------


def test_label_selector_grammar() -> None:
    labels = {"app": "webui", "state": "ready", "n": "3"}
    assert LabelSelector.parse("app=webui, state in (ready,warming), !user, n>2").matches(labels)
    assert not LabelSelector.parse("state notin (ready)").matches(labels)
    assert LabelSelector.parse("user!=x").matches(labels)  # != matches a missing key
    assert LabelSelector.from_spec(
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    ).matches(labels)


def test_patches() -> None:
    doc = {"metadata": {"labels": {"a/b": "1", "c": "2"}}}
    assert merge_patch(doc, {"metadata": {"labels": {"c": None, "d": "4"}}}) == {
        "metadata": {"labels": {"a/b": "1", "d": "4"}}
    }
    assert json_patch(doc, [{"op": "remove", "path": "/metadata/labels/a~1b"}]) == {
        "metadata": {"labels": {"c": "2"}}
    }


def test_buffer_policy_math_matches_agones() -> None:
    assert buffer_replicas({"bufferSize": 2, "minReplicas": 0, "maxReplicas": 10}, 3) == (5, False)
    assert buffer_replicas({"bufferSize": "30%", "minReplicas": 1, "maxReplicas": 20}, 8) == (
        12,
        False,
    )
    assert buffer_replicas({"bufferSize": 5, "minReplicas": 0, "maxReplicas": 6}, 3) == (6, True)
