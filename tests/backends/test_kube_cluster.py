"""What a real cluster does that a friendly one does not: lost nodes, missing permissions,
opaque resourceVersions, Retry-After on watches, and evictions of claimed pods."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from broker import pages
from broker.appkeys import FLEET, STORE
from fleet import Claim, Fleet, FleetStore, connect_redis, make_backend
from fleet.spec import parse_spec
from tests.backends.harness import KUBERNETES, Harness, harness
from tests.kubeapi import KubeSim

FORBIDDEN = (
    'pods is forbidden: User "system:serviceaccount:sdbroker:sdbroker" cannot list resource '
    '"pods" in API group "" in the namespace "sd"'
)


# --- 6. a node that stops answering ---------------------------------------------------------


async def test_a_lost_node_is_given_up_after_the_grace(redis_url: str, tmp_path: Path) -> None:
    """The node stops reporting: its pod turns Ready=False with its container still running.
    After node_lost_grace the claim ends, the user is told why, and gets another pod.
    Before: the pod read as starting and the claim stayed until the taint manager deleted
    the pod 300 s later."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=3) as h:
        assert h.sim is not None
        h.fleet.use_spec(h.spec.model_copy(update={"node_lost_grace": 1.0}))
        await h.ready(1)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        node = h.sim.pod("sd", claim.pod)["spec"]["nodeName"]
        h.sim.lose_node(node, evict_after=None)  # no taint eviction: only the grace can help
        await h.until(lambda: _no_claim(h, "ann"), within=15, what="the claim given up")
        notice = await h.store.pop_ended("ann")
        assert notice is not None and notice["reason"] == "node_lost"
        await h.ready(1)
        again = await h.claim("ann")
        assert isinstance(again, Claim) and again.pod != claim.pod


async def _no_claim(h: Harness, user: str) -> bool:
    return await h.store.lookup(user) is None


# --- 7. permissions and CRDs that are missing --------------------------------------------------


async def test_a_refused_first_list_names_verb_and_resource_and_fails_readiness(
    redis_url: str, tmp_path: Path
) -> None:
    """403 on the first list (the Role lacks `list pods`): start returns, readiness says
    what is missing, and all is well once the permission is granted. Before: start waited
    for ever and the broker never listened."""
    async with KubeSim(nodes=1) as sim:
        os.environ["KUBECONFIG"] = str(sim.write_kubeconfig(tmp_path / "kc", namespace="sd"))
        rule = sim.inject_api_error(
            403, verb="list", resource="pods", count=10**6, message=FORBIDDEN
        )
        spec = parse_spec(KUBERNETES.format(min=0, buffer=1, max=2))
        backend = make_backend(spec, tmp_path)
        redis = connect_redis(redis_url)
        try:
            async with asyncio.timeout(10):
                await backend.start()
            problem = backend.problem()
            assert problem.startswith("cannot list pods in namespace sd: HTTP 403 Forbidden")
            assert FORBIDDEN in problem and not backend.synced()
            async with aiohttp.ClientSession() as http:
                fleet = Fleet(FleetStore(redis), backend, spec, http)
                answer = await pages.readyz(_request(FleetStore(redis), fleet))
                assert answer.status == 503 and FORBIDDEN in str(answer.text)
                rule.remaining = 0  # the Role is fixed
                async with asyncio.timeout(15):
                    await backend.watches["sd"].synced.wait()  # type: ignore[attr-defined]
                answer = await pages.readyz(_request(FleetStore(redis), fleet))
                assert answer.status == 200
        finally:
            await backend.close()
            await redis.aclose()


def _request(store: FleetStore, fleet: Fleet) -> Any:
    request = make_mocked_request("GET", "/_broker/readyz")
    request.app[STORE] = store  # type: ignore[index]
    request.app[FLEET] = fleet  # type: ignore[index]
    return request


def test_a_watch_says_what_it_lists() -> None:
    from fleet.backends.kubewatch import describe

    def list_namespaced_pod() -> None: ...
    def list_namespaced_custom_object() -> None: ...

    assert describe(list_namespaced_pod, ("sd",)) == "pods in namespace sd"
    custom = ("agones.dev", "v1", "sd", "gameservers")
    assert (
        describe(list_namespaced_custom_object, custom) == "gameservers.agones.dev in namespace sd"
    )


# --- 8. opaque resourceVersions, Retry-After, claimed pods kept on their node -------------------


def _pod(name: str, version: str, state: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version, "labels": {"s": state}}}


def test_resource_versions_are_compared_for_equality_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events come in order; a version says nothing about order. Here the API server's
    versions do not grow as numbers (an aggregated API, a sharded store): the newer event
    has the smaller one. Before: the cache compared them as integers and dropped it."""
    from fleet.backends.kubewatch import ObjectWatch

    changes: list[str] = []
    watch = ObjectWatch(
        lambda: None, "sd", label_selector="", on_change=lambda k, o: changes.append(k)
    )
    watch.apply("MODIFIED", _pod("q", "97", "claimed"))  # the answers to two writes of ours:
    watch.apply("MODIFIED", _pod("q", "5", "ready"))  # the second's version is smaller
    assert watch.objects["q"]["metadata"]["labels"]["s"] == "ready"
    watch.event("ADDED", _pod("p", "12", "warming"))
    watch.apply("MODIFIED", _pod("p", "97", "claimed"))  # our own write, in the cache at once
    watch.event("MODIFIED", _pod("p", "40", "ready"))  # older than our write: kept out
    assert watch.objects["p"]["metadata"]["labels"]["s"] == "claimed"
    watch.event("MODIFIED", _pod("p", "97", "claimed"))  # the watch reaches our write
    watch.event("MODIFIED", _pod("p", "5", "claimed-and-more"))  # newer, smaller
    assert watch.objects["p"]["metadata"]["labels"]["s"] == "claimed-and-more"
    watch.apply("MODIFIED", _pod("p", "97", "claimed"))  # a late answer the watch passed
    assert watch.objects["p"]["metadata"]["labels"]["s"] == "claimed-and-more"
    monkeypatch.setattr("fleet.backends.kubecache.OWN_WRITE_HOLD", 0.0)
    watch.apply("MODIFIED", _pod("p", "300", "written"))  # a write whose event never comes:
    watch.expire()  # the watch's view is back after the hold
    assert watch.objects["p"]["metadata"]["labels"]["s"] == "claimed-and-more"


async def test_a_watch_backs_off_as_long_as_retry_after_says(tmp_path: Path) -> None:
    """A 429 on the watch with Retry-After: 7 waits 7 s, not the first back-off's 0.2 s."""
    from kubernetes_asyncio import client, config

    from fleet.backends.kubewatch import ObjectWatch

    pauses: list[float] = []
    resumed = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        resumed.set()

    async with KubeSim(nodes=1) as sim:
        cfg = client.Configuration()
        await config.load_kube_config(
            config_file=str(sim.write_kubeconfig(tmp_path / "kc", namespace="sd")),
            client_configuration=cfg,
        )
        async with client.ApiClient(cfg) as api:
            sim.inject_api_error(429, verb="watch", resource="pods", retry_after=7)
            core = client.CoreV1Api(api)
            watch = ObjectWatch(
                core.list_namespaced_pod, "sd", label_selector="", on_change=lambda k, o: None,
                sleep=pause,
            )  # fmt: skip
            watch.start()
            try:
                async with asyncio.timeout(10):
                    await resumed.wait()
            finally:
                await watch.stop()
    assert pauses and pauses[0] >= 7


async def test_a_claimed_pod_is_not_evicted_by_the_autoscaler(
    redis_url: str, tmp_path: Path
) -> None:
    """cluster-autoscaler (and GKE's node upgrades through it) leave a node with a claimed
    pod alone; a warm pod may go."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=2, max=3) as h:
        assert h.sim is not None
        await h.ready(2)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        safe = "cluster-autoscaler.kubernetes.io/safe-to-evict"
        for pod in h.sim.pods("sd"):
            annotations = pod["metadata"].get("annotations") or {}
            claimed = pod["metadata"]["name"] == claim.pod
            assert annotations.get(safe) == ("false" if claimed else None)
