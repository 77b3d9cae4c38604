"""A WebUI answers what it likes: a probe reads at most ANSWER_MAX bytes of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from fleet.probes import ANSWER_MAX, make_probe


@pytest.fixture
async def webui() -> AsyncIterator[tuple[str, list[int]]]:
    """/sdapi/v1/progress: 8 MiB streamed without a length (chunked); /small/...: a real one."""
    sent: list[int] = []

    async def progress(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(128):
                await response.write(b'{"state": {"job_count": 0}, "pad": "' + b"x" * 65536)
                sent.append(65536)
        except (ConnectionError, RuntimeError):
            pass  # the broker hung up: what it should do
        return response

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"state": {"job_count": 1}})

    app = web.Application()
    app.router.add_get("/sdapi/v1/progress", progress)
    app.router.add_get("/small/sdapi/v1/progress", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", sent
    await runner.cleanup()


async def test_a_huge_busy_answer_is_no_answer(webui: tuple[str, list[int]]) -> None:
    addr, sent = webui
    probe = make_probe("a1111")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError, match="answer over 65536 bytes"):
            await probe.busy(http, addr)
        assert await probe.busy(http, addr + "/small") is True  # a normal answer still counts
    assert sum(sent) < 128 * 65536  # the pod was cut off, not read to its end
    assert ANSWER_MAX == 64 * 1024
