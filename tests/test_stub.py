"""The CPU stand-in WebUI, exercised as a real subprocess over loopback HTTP.

Every other test in the project trusts this stub to behave like A1111, so these
tests pin the shapes and the behaviour (queueing, progress, saving, streaming)
that the broker and its probes rely on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

STUB = Path(__file__).resolve().parents[1] / "webui-image" / "stub" / "webui_stub.py"
DELAY = 0.3
READY_TIMEOUT = 20.0  # liveness only: a loaded CI box can be slow to start Python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stub:
    """One stub process on a free loopback port; ``stop`` always leaves it dead."""

    def __init__(self, outdir: Path, *extra: str, pod_id: str = "pod-test") -> None:
        self.port = free_port()
        self.pod_id = pod_id
        self.outdir = outdir
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(STUB), "--port", str(self.port), "--pod-id", pod_id]
        cmd += ["--delay", str(DELAY), "--outdir", str(outdir), *extra]
        self.log = outdir / f"stub-{self.port}.log"
        with self.log.open("wb") as sink:  # a file, not a pipe nobody drains
            self.proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=outdir)

    async def wait_listening(self, session: aiohttp.ClientSession) -> int:
        """Poll ``/internal/ping`` until the server answers; returns the first status."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"{self.base}/internal/ping") as resp:
                    return resp.status
            await asyncio.sleep(0.02)
        raise AssertionError(f"stub did not listen within {READY_TIMEOUT}s\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def stub(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Stub]:
    proc = Stub(tmp_path)
    try:
        assert await proc.wait_listening(http) == 200
        yield proc
    finally:
        proc.stop()


async def poll_until(fetch: Any, predicate: Any, within: float = 10.0) -> Any:
    """Call ``fetch`` until ``predicate`` holds for its result; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"condition never held; last value {value!r}"
        await asyncio.sleep(0.02)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def get_json_with(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as resp:
        return await resp.json()


async def post_bytes(http: aiohttp.ClientSession, url: str, data: bytes) -> Any:
    async with http.post(url, data=data) as resp:
        return await resp.json()


async def ping_status(http: aiohttp.ClientSession, proc: Stub) -> int:
    async with http.get(f"{proc.base}/internal/ping") as resp:
        return resp.status


async def read_sse(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """The next ``data:`` event of an SSE stream as JSON, or None at end of stream."""
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            return json.loads("\n".join(data))
    return None


async def test_txt2img_returns_png_saved_into_outdir_from_options(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    target = (stub.outdir / "alice" / "txt2img").resolve()
    opts = {"outdir_txt2img_samples": str(target)}
    assert await post_json(http, f"{stub.base}/sdapi/v1/options", opts) is None
    assert (await get_json(http, f"{stub.base}/sdapi/v1/options"))["outdir_txt2img_samples"] == str(
        target
    )

    body = {"prompt": "a red fox", "seed": 42, "width": 128, "height": 96, "steps": 5}
    first = await post_json(http, f"{stub.base}/sdapi/v1/txt2img", body)
    again = await post_json(http, f"{stub.base}/sdapi/v1/txt2img", body)

    assert set(first) == {"images", "parameters", "info"}
    assert first["parameters"]["prompt"] == "a red fox"
    png = base64.b64decode(first["images"][0])
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (128, 96))
    assert "Seed: 42" in image.info["parameters"]
    info = json.loads(first["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42]
    saved = Path(info["saved_paths"][0])
    assert saved == target / "00001-42.png"
    assert await asyncio.to_thread(saved.read_bytes) == png
    # same prompt and seed draw the same picture; the file number moves on
    assert again["images"] == first["images"]
    assert json.loads(again["info"])["saved_paths"] == [str(target / "00002-42.png")]


async def test_img2img_saves_into_img2img_outdir(stub: Stub, http: aiohttp.ClientSession) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 128, 255)).save(buf, format="PNG")
    init = base64.b64encode(buf.getvalue()).decode()
    body = {"prompt": "blue", "seed": 7, "init_images": [init], "width": 64, "height": 64}
    reply = await post_json(http, f"{stub.base}/sdapi/v1/img2img", body)
    saved = Path(json.loads(reply["info"])["saved_paths"][0])
    assert saved.parent == stub.outdir / "img2img-images"
    assert "init_images" not in reply["parameters"]
    async with http.post(f"{stub.base}/sdapi/v1/img2img", json={"init_images": ["@@"]}) as resp:
        assert resp.status == 422


async def test_progress_reports_job_count_during_generation_only(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    idle = await get_json(http, f"{stub.base}/sdapi/v1/progress?skip_current_image=true")
    assert idle["state"]["job_count"] == 0 and idle["progress"] == 0
    assert {"progress", "eta_relative", "state", "current_image", "textinfo"} <= set(idle)

    body = {"prompt": "slow", "steps": 10, "force_task_id": "task(probe)"}
    generation = asyncio.create_task(post_json(http, f"{stub.base}/sdapi/v1/txt2img", body))
    busy = await poll_until(
        lambda: get_json(http, f"{stub.base}/sdapi/v1/progress?skip_current_image=true"),
        lambda p: p["state"]["job_count"] > 0,
    )
    assert busy["state"]["job"] == "scripts_txt2img"
    assert busy["state"]["sampling_steps"] == 10
    assert 0 < busy["progress"] <= 1 and busy["current_image"] is None
    assert busy["current_task"] == "task(probe)"
    await generation

    after = await get_json(http, f"{stub.base}/sdapi/v1/progress?skip_current_image=true")
    assert after["state"]["job_count"] == 0 and after["progress"] == 0


async def test_pending_tasks_and_internal_progress_follow_the_queue(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    async def progress_of(id_task: str) -> dict[str, Any]:
        body = {"id_task": id_task, "id_live_preview": -1}
        return await post_json(http, f"{stub.base}/internal/progress", body)

    ids = [f"task(q{i})" for i in range(3)]
    jobs = []
    for id_task in ids:  # one at a time, so the queue order is known
        body = {"prompt": id_task, "force_task_id": id_task, "batch_size": 2}
        jobs.append(asyncio.create_task(post_json(http, f"{stub.base}/sdapi/v1/txt2img", body)))
        await poll_until(lambda t=id_task: progress_of(t), lambda p: p["active"] or p["queued"])
    # one runs, two wait: A1111 lists only the waiting ones
    pending = await get_json(http, f"{stub.base}/internal/pending-tasks")
    assert pending == {"size": 2, "tasks": ids[1:]}

    running = await progress_of(ids[0])
    assert running["active"] and not running["queued"] and not running["completed"]
    assert isinstance(running["progress"], float) and running["id_live_preview"] == -1
    waiting = await progress_of(ids[2])
    assert waiting["queued"] and not waiting["active"] and waiting["progress"] is None
    assert waiting["textinfo"] == "In queue: 2/2"

    await asyncio.gather(*jobs)
    assert await get_json(http, f"{stub.base}/internal/pending-tasks") == {"size": 0, "tasks": []}
    done = await progress_of(ids[2])
    assert done["completed"] and not done["active"] and not done["queued"]
    unknown = await progress_of("task(nope)")
    assert unknown == {
        "active": False,
        "queued": False,
        "completed": False,
        "progress": None,
        "eta": None,
        "live_preview": None,
        "id_live_preview": -1,
        "textinfo": "Waiting...",
    }


async def test_gradio3_websocket_queue_runs_a_generation(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    seen: list[str] = []
    async with http.ws_connect(f"{stub.base}/queue/join") as ws:
        assert await ws.receive_json() == {"msg": "send_hash"}
        await ws.send_json({"fn_index": 0, "session_hash": "abc123"})
        estimation = await ws.receive_json()
        assert estimation["msg"] == "estimation" and estimation["rank"] == 0
        assert await ws.receive_json() == {"msg": "send_data"}
        data = ["task(ws1)", "a castle", ""]
        await ws.send_json({"fn_index": 0, "session_hash": "abc123", "data": data})
        async for msg in ws:
            message = json.loads(msg.data)
            seen.append(message["msg"])
            if message["msg"] == "progress":
                unit = message["progress_data"][0]
                assert unit["unit"] == "steps" and 1 <= unit["index"] <= unit["length"]
            if message["msg"] == "process_completed":
                completed = message
        assert ws.closed  # the server ends the socket after the event, as Gradio 3 does

    assert seen[0] == "process_starts" and seen[-1] == "process_completed"
    assert "progress" in seen
    assert completed["success"] is True
    gallery, info_json = completed["output"]["data"][:2]
    info = json.loads(info_json)
    assert info["prompt"] == "a castle"
    assert gallery[0]["data"].startswith("data:image/png;base64,")
    assert await asyncio.to_thread(Path(gallery[0]["name"]).is_file)
    state = await post_json(http, f"{stub.base}/internal/progress", {"id_task": "task(ws1)"})
    assert state["completed"] is True


async def test_gradio4_sse_queue_delivers_events_one_at_a_time(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{stub.base}/queue/data?session_hash=nobody") as resp:
        assert resp.status == 404

    # a longer REST job ahead keeps our event waiting, so "not finished yet" is unambiguous
    blocker = {"prompt": "ahead", "batch_size": 3}
    ahead = asyncio.create_task(post_json(http, f"{stub.base}/sdapi/v1/txt2img", blocker))
    await poll_until(
        lambda: get_json(http, f"{stub.base}/sdapi/v1/progress"),
        lambda p: p["state"]["job_count"] > 0,
    )
    join = {"data": ["task(sse1)", "a harbour"], "fn_index": 3, "session_hash": "s1"}
    event_id = (await post_json(http, f"{stub.base}/queue/join", join))["event_id"]
    async with http.get(f"{stub.base}/queue/data?session_hash=s1") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await read_sse(resp)
        # the first event is in hand while its job has not even started: nothing was buffered
        state = await post_json(http, f"{stub.base}/internal/progress", {"id_task": "task(sse1)"})
        assert state["queued"] and not state["completed"]
        events = [first]
        while (event := await read_sse(resp)) is not None:
            events.append(event)
    await ahead

    kinds = [e["msg"] for e in events if e]
    assert kinds[0] == "estimation" and kinds[1] == "process_starts"
    assert kinds[-2:] == ["process_completed", "close_stream"]
    assert set(kinds[2:-2]) == {"progress"}
    assert first is not None and first["rank"] == 1 and first["queue_size"] == 2
    assert all(e["event_id"] == event_id for e in events[:-1] if e)
    completed = events[-2]
    assert completed is not None and completed["success"] is True
    assert json.loads(completed["output"]["data"][1])["prompt"] == "a harbour"


async def test_stub_sse_sends_numbered_events_incrementally(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{stub.base}/stub/sse?count=3&interval=0.4") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await read_sse(resp)
        received_first = time.time()
        rest = [await read_sse(resp), await read_sse(resp)]
        assert await read_sse(resp) is None
    assert first is not None and first["n"] == 0
    assert [e["n"] for e in rest if e] == [1, 2]
    # event 0 was in our hands before the server even produced event 1 (same host clock)
    assert rest[0] is not None and received_first < rest[0]["t"]


async def test_whoami_and_page_show_the_forwarded_user(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Forwarded-User": "alice", "Cookie": "sdb_session=x; other=y"}
    who = await get_json_with(http, f"{stub.base}/stub/whoami", headers)
    assert who == {
        "pod": "pod-test",
        "user": "alice",
        "email": None,
        "cookies": ["other", "sdb_session"],
    }
    assert (await get_json(http, f"{stub.base}/stub/whoami"))["user"] is None

    async with http.get(f"{stub.base}/", headers={"X-Forwarded-User": "<b>eve</b>"}) as resp:
        page = await resp.text()
    assert '<b id="pod-id">pod-test</b>' in page
    assert '<b id="user">&lt;b&gt;eve&lt;/b&gt;</b>' in page
    for element in ('id="prompt"', 'id="generate"', 'id="result"', 'id="saved-path"'):
        assert element in page


async def test_streaming_helpers_bytes_upload_headers_and_ws_echo(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    size = 3 * 65536 + 17
    async with http.get(f"{stub.base}/stub/bytes?size={size}") as resp:
        body = await resp.read()
    assert resp.headers["Content-Length"] == str(size) and body == bytes(size)

    payload = os.urandom(300_000)
    reply = await post_bytes(http, f"{stub.base}/stub/upload", payload)
    assert reply == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

    headers = await get_json_with(http, f"{stub.base}/stub/echo-headers", {"X-Test": "1"})
    assert headers["x-test"] == "1" and "host" in headers

    async with http.ws_connect(f"{stub.base}/stub/ws-echo?push=0.1") as ws:
        await ws.send_str("hello")
        await ws.send_bytes(b"\x00\x01")
        got: list[Any] = []
        while len(got) < 3:
            msg = await ws.receive(timeout=3)
            got.append(msg.data)
        assert "hello" in got and b"\x00\x01" in got
        assert any(isinstance(m, str) and m.startswith('{"push"') for m in got)

    assert await get_json(http, f"{stub.base}/heartbeat/abc") == {}
    async with http.get(f"{stub.base}/favicon.ico") as resp:
        assert resp.status == 204


async def test_startup_delay_makes_ping_503_then_200(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    proc = Stub(tmp_path, "--startup-delay", "1.0")
    try:
        assert await proc.wait_listening(http) == 503
        await poll_until(lambda: ping_status(http, proc), lambda status: status == 200)
    finally:
        proc.stop()


async def test_sigterm_exits_promptly_with_streams_open(
    stub: Stub, http: aiohttp.ClientSession
) -> None:
    async with (
        http.get(f"{stub.base}/stub/sse?count=100&interval=1") as sse,
        http.ws_connect(f"{stub.base}/stub/ws-echo") as ws,
    ):
        assert await read_sse(sse) is not None
        await ws.send_str("ping")
        assert (await ws.receive()).data == "ping"
        stub.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(stub.proc.wait, 2)
    assert code == 0
    assert "listening on" in stub.output()
