"""Pod addresses as the platforms hand them out, IPv6 included (IPv6-only and
dual-stack clusters): the record's URL, the probes, and the proxy's pod client
all reach a pod listening on ::1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from broker.proxy import PodPool
from broker.proxy.forward import host_port
from fleet import make_probe
from fleet.backends.kubepods import pod_record
from fleet.model import http_address
from tests.support import in_ci


def running_pod(ip: str) -> dict:
    return {
        "metadata": {"name": "p1", "labels": {}, "annotations": {}},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.mark.parametrize(
    ("ip", "addr"),
    [
        ("10.4.0.7", "http://10.4.0.7:7860"),
        ("fd00:10:4::7", "http://[fd00:10:4::7]:7860"),
    ],
)
def test_a_pods_address_is_a_url_for_ipv4_and_ipv6(ip: str, addr: str) -> None:
    assert pod_record(running_pod(ip), 7860).addr == addr
    assert host_port(addr) == (ip, 7860)  # what the proxy connects to


def has_ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.fixture
async def ipv6_pod() -> AsyncIterator[str]:
    if not has_ipv6_loopback():
        if in_ci():
            pytest.fail("CI=true but this machine has no IPv6 loopback (::1)")
        pytest.skip("no IPv6 loopback on this machine (a container started without IPv6)")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong from " + request.path)

    app = web.Application()
    app.router.add_get("/internal/ping", ping)
    app.router.add_get("/page", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield http_address("::1", port)
    await runner.cleanup()


async def test_probe_and_proxy_reach_a_pod_on_ipv6(ipv6_pod: str) -> None:
    async with aiohttp.ClientSession() as http:
        assert await make_probe("a1111").ready(http, ipv6_pod)
    pool = PodPool()
    try:
        host, port = host_port(ipv6_pod)
        answer = await pool.request(
            "GET",
            host,
            port,
            "/page",
            CIMultiDict({"Host": "broker.example"}),
            None,
            connect_timeout=2,
            read_timeout=5,
        )
        assert (answer.status, await answer.read()) == (200, b"pong from /page")
        answer.release()
    finally:
        pool.close()
