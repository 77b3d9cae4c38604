"""Readiness never depends on Redis: with Redis down, every readiness probe the
manifests give the kubelet still answers 200, and a user's cached route still serves.

Before: /_broker/readyz pinged Redis and answered 503 while it was down, so the
base and the oidc overlay (whose readinessProbe is readyz) took every broker out
of the Service at once on a Redis restart, cached routes and all.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import RedisServer, wait_for
from tests.test_manifests import TARGETS, pod_spec, rendered, the


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-own")
    server.start()
    yield server
    server.stop()


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe_paths() -> set[str]:
    """Every readinessProbe path of the broker in the base and every overlay."""
    paths = set()
    for target in TARGETS:
        (broker,) = pod_spec(the(rendered(target), "Deployment", "sdbroker"))["containers"]
        paths.add(broker["readinessProbe"]["httpGet"]["path"])
    return paths


def test_redis_down_leaves_brokers_ready_and_cached_routes_serving(
    brokers, own_redis: RedisServer
) -> None:
    paths = probe_paths()
    assert "/_broker/readyz" in paths  # the base's and oidc's probe: the one that pinged Redis
    broker = brokers(
        redis=own_redis.url,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_ROUTE_CACHE_TTL="10m",
    )
    user = {"X-Forwarded-User": "ann"}
    status, body = wait_for(
        lambda: (r := get(broker.url + "/stub/whoami", **user))[0] == 200 and r, 30, what="a pod"
    )
    pod = json.loads(body)["pod"]

    own_redis.stop()
    for path in sorted(paths):
        status, body = get(broker.url + path)
        assert status == 200, f"{path} answered {status} with Redis down: {body!r}"
    assert b"redis unreachable" in get(broker.url + "/_broker/readyz")[1]
    for _ in range(5):
        status, body = get(broker.url + "/stub/whoami", **user)
        assert (status, json.loads(body)["pod"]) == (200, pod)
