"""A changed pod template (here: the local profile's command) replaces the warm pods made
from the old one, a few at a time, while a claimed pod of the old template serves its
user until the session ends (single-use: nobody else ever gets it)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import redis

from fleet import keys
from tests.support.procs import wait_for, write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}


def whoami(base: str, user: str) -> dict | None:
    req = urllib.request.Request(base + "/stub/whoami", headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_a_new_command_rolls_the_warm_pods_and_keeps_the_claimed_one(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=out, buffer=2, max=5)
    broker = brokers(fleet=fleet, SDB_FLEET_RELOAD="0.5s", SDB_REAP_INTERVAL="1s", **HEADER_AUTH)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ready = lambda: client.zrange(keys.ready("default"), 0, -1)  # noqa: E731
        ann = wait_for(lambda: whoami(broker.url, "ann"), 20, what="ann's pod")["pod"]
        old = set(wait_for(lambda: len(r := ready()) == 2 and r, 20, what="two warm pods"))
        records = {r["id"]: r for r in broker.pod_records()}
        (old_hash,) = {records[p]["template"] for p in old | {ann}}
        assert old_hash

        write_fleet(fleet, outputs=out, buffer=2, max=5, delay=0.31)  # another command
        seen_ready: list[int] = []

        def rolled() -> bool:
            now = ready()
            seen_ready.append(len(now))
            fresh = {r["id"]: r["template"] for r in broker.pod_records()}
            return len(now) == 2 and all(fresh.get(p) not in (None, old_hash) for p in now)

        wait_for(rolled, 60, interval=0.05, what="the warm pods replaced")
        assert not old & set(ready())
        # Surge first, then retire: the warm buffer was never short during the roll.
        assert min(seen_ready) >= 2, seen_ready
        # ann keeps her pod of the old template, and still reaches it.
        assert client.hget(keys.claim("ann"), "pod") == ann
        assert (whoami(broker.url, "ann") or {}).get("pod") == ann
        assert {r["id"]: r for r in broker.pod_records()}[ann]["template"] == old_hash
        assert "retired: made from an older template" in broker.log_text()

        # Her session ends as any does (here: idle), and the old pod goes with it.
        write_fleet(fleet, outputs=out, buffer=2, max=5, delay=0.31, idle_timeout="1s")
        wait_for(
            lambda: ann not in {r["id"] for r in broker.pod_records()}, 30, what="ann's pod gone"
        )
    finally:
        client.close()
