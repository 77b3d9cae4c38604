"""The local backend and controller: refill on claim, GPU slots, dead pods, slugs."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
import redis

from fleet import keys, slugify
from tests.chaos.support import pod_of, until
from tests.chaos.support import whoami as chaos_whoami
from tests.chaos.test_pod_faults import browser, kill_pod, start_new
from tests.support.procs import STUB, wait_for, write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}


def get(base: str, path: str, user: str) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def whoami(base: str, user: str) -> dict | None:
    status, body = get(base, "/stub/whoami", user)
    return json.loads(body) if status == 200 else None


def test_claim_refills_the_buffer_at_once_not_on_a_timer(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    # The periodic reconcile never runs during this test: only events can refill.
    broker = brokers(fleet=fleet, SDB_CONTROLLER_INTERVAL="1h", **HEADER_AUTH)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    wait_for(lambda: client.zcard(keys.ready("default")) == 1, 20, what="one warm pod")
    first = wait_for(lambda: whoami(broker.url, "ann"), 10, what="ann's pod")
    wait_for(lambda: client.zcard(keys.ready("default")) == 1, 20, what="the buffer refilled")
    ready = client.zrange(keys.ready("default"), 0, -1)
    assert first["pod"] not in ready
    client.close()


def test_gpu_slots_pin_one_pod_per_gpu(brokers, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"""backend: local
outputs: {tmp_path / "out"}
profiles:
  - name: gpus
    min: 2
    buffer: 2
    max: 2
    local:
      command: [python, {STUB}, --port, "{{port}}", --pod-id, "{{pod}}"]
      gpus: [3, 5]
"""
    )
    broker = brokers(fleet=fleet, **HEADER_AUTH)
    records = wait_for(lambda: len(r := broker.pod_records()) == 2 and r, 20, what="two pods")
    pinned = set()
    for rec in records:
        environ = Path(f"/proc/{rec['pid']}/environ").read_bytes().split(b"\0")
        pinned |= {
            e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES=")
        }
    assert pinned == {"3", "5"}


async def test_dead_pod_ends_the_claim_and_the_user_gets_a_new_one(brokers, redis_url: str) -> None:
    """Background requests are then told the session ended (409); a page load starts anew."""
    broker = brokers(**HEADER_AUTH)
    async with browser() as http:
        first = await pod_of(http, broker.url, "ann")
        kill_pod(broker, first)
        status, body = await chaos_whoami(http, broker.url, "ann")
        assert status == 502 and "Your WebUI stopped" in body

        async def told() -> bool:  # 502 again while the process is still dying
            status, body = await chaos_whoami(http, broker.url, "ann")
            assert status in (502, 409), (status, body)  # never a new pod behind ann's back
            return status == 409

        await until(told, what="the claim ended with a notice")
        second = await start_new(http, broker.url, "ann")
    assert second != first
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.hget(keys.claim("ann"), "pod") == second

        async def forgotten() -> bool:  # cleaned up, never handed to anyone else
            return not client.exists(keys.pod(first))

        await until(forgotten, what="dead pod forgotten")
    finally:
        client.close()


def test_waiting_page_when_the_fleet_is_full(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=1)
    broker = brokers(fleet=fleet, **HEADER_AUTH)
    wait_for(lambda: whoami(broker.url, "ann"), 20, what="ann's pod")
    status, body = get(broker.url, "/sdapi/v1/options", "bob")
    assert status == 503
    assert json.loads(body)["position"] == 1
    req = urllib.request.Request(
        broker.url + "/", headers={"X-Forwarded-User": "bob", "Accept": "text/html"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 503
    assert err.value.headers["Retry-After"]
    assert b"in line" in err.value.read()


LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "identity",
    [
        "ann",
        "Ann@Example.com",
        "ann@example.com",
        "../../etc/passwd",
        "ünïcødé",
        "a" * 300,
        "",
        "--",
        "x y/z",
    ],
)
def test_slugs_are_safe_for_paths_and_labels(identity: str) -> None:
    slug = slugify(identity)
    assert len(slug) <= 63
    assert LABEL.match(slug)
    assert "/" not in slug and ".." not in slug


def test_slugs_never_collide_for_different_identities() -> None:
    identities = [
        "Ann@Example.com",
        "ann@example.com",
        "ann@example.com ",
        "ann@example-com",
        "ann",
    ]
    assert len({slugify(i) for i in identities}) == len(identities)
