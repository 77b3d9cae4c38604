"""The agent in an Agones GameServer pod, against a fake SDK sidecar speaking the REST gateway.

Agones has no "not ready" once Ready is called, and Ready on an Allocated
GameServer returns it to the pool, so the tests pin when /ready is sent
(after the model loads, once, never on an allocated server) as well as the
health pings and the allocation labels arriving over /watch/gameserver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from tests.agent.conftest import (
    SLUG,
    FakeSDK,
    Pod,
    get_json,
    pointed,
    ready_is,
    ready_status,
    wait_until,
)


async def test_ready_once_after_the_model_loads_then_health_and_allocation(
    pod: Pod, http: aiohttp.ClientSession, make_sdk: Callable[..., FakeSDK]
) -> None:
    sdk = make_sdk()
    await sdk.start()
    stub = pod.start_stub(startup_delay=1.0)
    # No SDB_AGENT_MODE: AGONES_SDK_HTTP_PORT, which Agones sets, selects the mode.
    agent = pod.start_agent(AGONES_SDK_HTTP_PORT=str(sdk.port))

    await wait_until(lambda: sdk.count("health") >= 2, "health pings while loading", [agent])
    assert await ready_status(http, pod) == 503
    assert sdk.count("ready") == 0  # the WebUI is still loading its model

    await wait_until(lambda: sdk.count("ready") == 1, "SDK /ready", [stub, agent])
    assert await ready_status(http, pod) == 200
    pings = sdk.count("health")
    await asyncio.sleep(0.5)
    assert sdk.count("ready") == 1  # once, ever
    assert sdk.count("health") >= pings + 2  # and the pings go on

    sdk.allocate()
    folder = pod.outputs / SLUG
    await wait_until(lambda: pointed(http, pod, folder), "outputs from the watch", [agent])
    assert folder.is_dir()
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert state["mode"] == "agones" and state["user"] == SLUG
    assert state["agones"]["ready_sent"] is True and state["agones"]["health_pings"] >= 4
    assert sdk.count("ready") == 1


async def test_a_late_sidecar_and_a_dropped_watch_are_survived(
    pod: Pod, http: aiohttp.ClientSession, make_sdk: Callable[..., FakeSDK]
) -> None:
    sdk = make_sdk()  # not started: the sidecar may come up after the game server
    stub = pod.start_stub()
    agent = pod.start_agent(AGONES_SDK_HTTP_PORT=str(sdk.port), SDB_AGENT_MODE="agones")
    await wait_until(lambda: ready_is(http, pod, 200), "WebUI ready", [stub, agent])
    await asyncio.sleep(0.3)
    await sdk.start()

    await wait_until(lambda: sdk.count("ready") == 1, "SDK /ready after retries", [agent])
    await wait_until(lambda: sdk.watchers, "a watch stream", [agent])
    watches = sdk.count("watch")
    sdk.drop_watches()  # the sidecar restarts, or a proxy cuts the stream
    await wait_until(lambda: sdk.count("watch") > watches and sdk.watchers, "rewatch", [agent])

    sdk.allocate()
    await wait_until(lambda: pointed(http, pod, pod.outputs / SLUG), "outputs", [agent])
    assert "not reachable yet, retrying" in agent.output()


async def test_an_allocated_gameserver_is_never_sent_ready(
    pod: Pod, http: aiohttp.ClientSession, make_sdk: Callable[..., FakeSDK]
) -> None:
    """The agent restarted inside a pod that already has a user: Ready would hand
    the user's pod to the next allocation, so the agent must not call it."""
    sdk = make_sdk(state="Allocated")
    sdk.allocate()
    await sdk.start()
    stub = pod.start_stub()
    agent = pod.start_agent(AGONES_SDK_HTTP_PORT=str(sdk.port))

    await wait_until(lambda: pointed(http, pod, pod.outputs / SLUG), "outputs", [stub, agent])
    await wait_until(lambda: "not calling Ready" in agent.output(), "the refusal", [agent])
    await wait_until(lambda: sdk.count("health") >= 2, "health pings", [agent])
    assert sdk.count("ready") == 0
    _, state = await get_json(http, f"{pod.agent_url}/status")
    assert state["agones"]["ready_sent"] is False and state["ready"] is True
