"""Kubernetes-only behaviours: stuck pods reported fast, claim conflicts, watch resumption."""

from __future__ import annotations

from pathlib import Path

from fleet import Claim
from tests.backends.harness import harness


async def test_image_pull_failure_is_reported_and_replaced(redis_url: str, tmp_path: Path) -> None:
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=2) as h:
        assert h.sim is not None
        h.sim.inject_pod_failure("image_pull", count=1)
        await h.until(
            lambda: (
                "ImagePull" in h.controller.health.get("default").last_error
                if "default" in h.controller.health
                else False
            ),
            within=15,
            what="image pull error reported",
        )
        await h.ready(1)  # replaced (with backoff) by a pod that starts


async def test_claim_conflict_takes_another_pod(redis_url: str, tmp_path: Path) -> None:
    async with harness("kubernetes", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        assert h.sim is not None
        h.sim.inject_api_error(409, verb="patch", resource="pods", count=3)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        labels = h.sim.pod("sd", claim.pod)["metadata"]["labels"]
        assert labels["sdbroker.io/state"] == "claimed"


async def test_dropped_watch_resumes(redis_url: str, tmp_path: Path) -> None:
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=3) as h:
        await h.ready(1)
        assert h.sim is not None
        h.sim.drop_watches(abrupt=True)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        h.sim.evict("sd", claim.pod)  # only a resumed watch sees this
        await h.until(lambda: _no_claim(h, "ann"), what="eviction seen after the watch dropped")


async def _no_claim(h, user: str) -> bool:
    return await h.store.lookup(user) is None


async def test_pods_of_no_pool_are_removed(redis_url: str, tmp_path: Path) -> None:
    """A managed pod whose profile no longer exists belongs to no claim and no pool: deleted."""
    from kubernetes_asyncio import client

    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=2) as h:
        await h.ready(1)
        stray = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "gone-profile-1",
                "labels": {
                    "app.kubernetes.io/managed-by": "sdbroker",
                    "sdbroker.io/profile": "gone-profile",
                    "sdbroker.io/state": "ready",
                },
            },
            "spec": {"containers": [{"name": "webui", "image": "example/sd-webui:test"}]},
        }
        core = client.CoreV1Api(h.backend.api)  # type: ignore[attr-defined]
        await core.create_namespaced_pod("sd", stray)
        await h.until(
            lambda: (
                h.sim.pod("sd", "gone-profile-1") is None
                or bool(h.sim.pod("sd", "gone-profile-1")["metadata"].get("deletionTimestamp"))
            ),
            within=20,
            what="the stray pod deleted",
        )
        assert await h.store.lookup("anyone") is None
        assert (await h.counts())["ready"] >= 1  # the real pool is untouched


async def test_a_new_image_rolls_the_warm_pods_and_keeps_the_claimed_one(
    redis_url: str, tmp_path: Path
) -> None:
    """Pods carry their template's hash as a label; after an image change the Ready ones
    with the old hash are replaced one at a time (the warm buffer stays served) and the
    claimed one keeps serving its user, labelled with the old hash."""
    from fleet.backends.kubepods import TEMPLATE_LABEL
    from fleet.spec import parse_spec
    from tests.backends.harness import KUBERNETES

    async with harness("kubernetes", redis_url, tmp_path, buffer=2, max=5) as h:
        assert h.sim is not None
        sim = h.sim
        await h.ready(2)
        claim = await h.claim("ann")
        assert isinstance(claim, Claim)
        await h.ready(2)

        def labels(name: str) -> dict[str, str]:
            return (sim.pod("sd", name) or {}).get("metadata", {}).get("labels") or {}

        old = {p.id for p in await h.store.pods_by_id(list(await _ready(h)))}
        old_hash = labels(claim.pod)[TEMPLATE_LABEL]
        assert old_hash and {labels(p)[TEMPLATE_LABEL] for p in old} == {old_hash}

        text = KUBERNETES.format(min=0, buffer=2, max=5).replace(":test", ":test2")
        h.fleet.use_spec(parse_spec(text))
        h.controller.wake()
        seen: list[int] = []

        async def rolled() -> bool:
            ready = await _ready(h)
            seen.append(len(ready))
            hashes = {labels(p).get(TEMPLATE_LABEL) for p in ready}
            return len(ready) == 2 and old_hash not in hashes and None not in hashes

        await h.until(rolled, within=60, what="the warm pods replaced")
        assert not old & set(await _ready(h))
        assert min(seen) >= 2, seen  # surge, then retire: never short of the buffer
        image = sim.pod("sd", next(iter(await _ready(h))))["spec"]["containers"][0]["image"]
        assert image.endswith(":test2")
        # ann's pod of the old image: still hers, still serving, never retired.
        assert (await h.store.lookup("ann")).pod == claim.pod
        assert labels(claim.pod)[TEMPLATE_LABEL] == old_hash
        assert labels(claim.pod)["sdbroker.io/state"] == "claimed"
        assert (await h.whoami(claim))["pod"] == claim.pod


async def _ready(h) -> set[str]:
    from fleet import keys

    return set(await h.store.redis.zrange(keys.ready("default"), 0, -1))
