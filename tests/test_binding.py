"""A claim made on one broker is not used by another before its pod is ready for the user.

Making a claim is one Lua call, then the claimer records it on the pod and
points the WebUI at the user's folder. A second broker that gets the same
person's request in between must wait for that, or a picture made by that
request would be saved outside the person's folder. The claimer's bound.lua
publishes a `bound` event, which the waiting broker hears (it goes on at it).
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import aiohttp

from tests.support.procs import Broker, wait_for, write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}
OPTIONS_DELAY = 1.5  # the pod takes this long to take its outputs folder


def metrics_of(broker: Broker) -> str:
    with urllib.request.urlopen(broker.url + "/_broker/metrics", timeout=10) as resp:
        return resp.read().decode()


async def test_a_second_broker_waits_until_the_pod_is_the_users(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)
    env = {
        **HEADER_AUTH,
        "STUB_OPTIONS_DELAY": str(OPTIONS_DELAY),
        "SDB_METRICS_CIDRS": "127.0.0.0/8",
    }
    first, second = brokers(fleet=fleet, **env), brokers(fleet=fleet, **env)
    # Ready, not merely started: on a loaded machine a pod's start outlasts the request
    ready = re.compile(r'^sdbroker_pods\{profile="default",state="ready"\} [1-9]', re.M)
    wait_for(lambda: ready.search(metrics_of(first)), 60, what="a warm pod")
    headers = {"X-Forwarded-User": "ann"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def get(url: str) -> tuple[int, dict]:
            async with http.get(url) as resp:
                return resp.status, await resp.json(content_type=None)

        async def options_later() -> tuple[int, dict]:
            await asyncio.sleep(OPTIONS_DELAY / 3)  # the claim exists; its pod is not ready
            return await get(second.url + "/sdapi/v1/options")

        (status, whoami), (status2, options) = await asyncio.gather(
            get(first.url + "/stub/whoami"), options_later()
        )
        async with http.get(second.url + "/_broker/metrics") as resp:
            metrics = await resp.text()
    assert status == 200 and whoami["user"] == "ann"
    assert status2 == 200, options
    # The second broker's request reached the pod after it was told ann's folder.
    assert options["outdir_txt2img_samples"].startswith(str((tmp_path / "out").resolve() / "ann"))
    # The second broker heard the first one's `bound` event over Redis pub/sub.
    assert re.search(r'^sdbroker_events_heard_total\{kind="bound"\} [1-9]', metrics, re.M), metrics
