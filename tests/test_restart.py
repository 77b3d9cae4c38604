"""A broker killed and started again: users keep their pods, pods are adopted, not restarted."""

from __future__ import annotations

import json
import urllib.request

import redis

from fleet import keys
from tests.support.procs import wait_for


def whoami(base: str, user: str) -> dict | None:
    req = urllib.request.Request(base + "/stub/whoami", headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_killed_broker_restarts_and_adopts_pods(brokers, redis_url: str, tmp_path) -> None:
    env = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}
    broker = brokers(**env)
    before = {u: wait_for(lambda u=u: whoami(broker.url, u), 20, what=u) for u in ("ann", "bob")}
    records = {r["id"]: r["pid"] for r in broker.pod_records()}
    assert before["ann"]["pod"] != before["bob"]["pod"]

    broker.kill()  # SIGKILL: no clean-up at all
    assert all(whoami(broker.url, u) is None for u in before)

    again = brokers(data_dir=broker.data_dir, **env)
    after = {u: wait_for(lambda u=u: whoami(again.url, u), 20, what=u) for u in before}
    assert {u: a["pod"] for u, a in after.items()} == {u: b["pod"] for u, b in before.items()}
    adopted = {r["id"]: r["pid"] for r in again.pod_records()}
    for pod in (before["ann"]["pod"], before["bob"]["pod"]):
        assert adopted[pod] == records[pod], "the pod process was restarted"


def test_index_rebuilt_after_flushall(brokers, redis_url: str) -> None:
    broker = brokers(
        SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32", SDB_ROUTE_CACHE_TTL="0.1s"
    )
    pod = wait_for(lambda: whoami(broker.url, "ann"), 20, what="ann's pod")["pod"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.flushall()
        # Claims come back from the pods' own records, not from guesses.
        wait_for(lambda: client.hget(keys.claim("ann"), "pod"), 20, what="rebuilt claim")
        assert client.hget(keys.claim("ann"), "pod") == pod
        assert whoami(broker.url, "ann")["pod"] == pod
        other = wait_for(lambda: whoami(broker.url, "bob"), 20, what="bob's pod")
        assert other["pod"] != pod
    finally:
        client.close()
