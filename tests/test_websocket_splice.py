"""WebSockets after the handshake: spliced bytes, seen only at frame headers.

The scanner is checked on frames cut at every possible place; the splice
through a real broker to real stub pods, for what a browser relies on:
subprotocols and compression agreed with the pod, large messages under
flow control, control frames, a pod that dies, and a pod that refuses.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

import aiohttp
import pytest

from broker.proxy.splice import FrameScanner
from tests.support.procs import Broker, wait_for
from tests.test_proxy import as_user, claimed

MB = 1024 * 1024


def frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if masked:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def stream(masked: bool) -> tuple[bytes, int]:
    """Frames of every header size, with payloads that look like headers."""
    frames = [
        frame(0x1, b"", masked=masked),
        frame(0x9, b"ping", masked=masked),  # control frames are not a person
        frame(0x1, b"\x81\x05hello" * 5, masked=masked),
        frame(0x2, bytes(125), masked=masked),
        frame(0x2, bytes(126), masked=masked, fin=False),
        frame(0x0, b"\x88" * 65535, masked=masked),  # a continuation: still the user's data
        frame(0xA, b"", masked=masked),
        frame(0x2, os.urandom(70000), masked=masked),
    ]
    data_frames = 6
    return b"".join(frames), data_frames


@pytest.mark.parametrize("masked", [True, False])
def test_scanner_finds_every_data_frame_wherever_the_stream_is_cut(masked: bool) -> None:
    data, expected = stream(masked)
    rng = random.Random(7)
    cuts = [sorted(rng.sample(range(1, len(data)), k)) for k in (1, 5, 50, 500)]
    cuts += [list(range(1, 300))]  # the first frames, one byte at a time
    for points in cuts:
        scanner = FrameScanner()
        pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
        found = sum(scanner.feed(piece) for piece in pieces)
        assert found == expected, points[:10]
        assert scanner.between_frames and not scanner.closed


def test_scanner_tells_a_close_frame_and_a_frame_cut_short() -> None:
    scanner = FrameScanner()
    assert scanner.feed(frame(0x1, b"bye", masked=False)[:4]) == 1
    assert not scanner.between_frames  # the pod died mid-frame: no close frame may follow
    scanner.feed(b"e" + frame(0x8, b"\x03\xe8", masked=False))
    assert scanner.closed and scanner.between_frames


@pytest.fixture
def broker(brokers) -> Broker:
    b = brokers(SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    wait_for(lambda: len(b.pod_records()) >= 1, 20, what="a pod")
    return b


async def test_subprotocol_compression_and_large_messages_pass_both_ways(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        async with http.ws_connect(
            broker.url + "/stub/ws-echo?protocols=b,c",
            headers=as_user(),
            protocols=["a", "b"],
            compress=15,
            max_msg_size=0,
            autoping=False,  # so that the pod's pong reaches this test
        ) as ws:
            assert ws.protocol == "b"  # the pod chose, from what the browser offered
            assert ws.compress == 15  # permessage-deflate agreed with the pod itself
            big = os.urandom(8 * MB)  # far past any socket buffer: flow control in both ways
            await ws.send_bytes(big)
            await ws.send_str("after the big one")
            assert (await asyncio.wait_for(ws.receive(), 30)).data == big
            assert (await asyncio.wait_for(ws.receive(), 5)).data == "after the big one"
            await ws.ping(b"are you there")
            pong = await asyncio.wait_for(ws.receive(), 5)
            assert pong.type is aiohttp.WSMsgType.PONG and pong.data == b"are you there"
            await ws.close(code=4001, message=b"done")
        assert ws.close_code == 1000  # the pod's own answer to the close, not one the broker made
    assert "Traceback" not in broker.log_text()


async def test_a_pod_that_dies_gets_the_browser_a_close_frame(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        pod = (await claimed(http, broker))["pod"]
        async with http.ws_connect(broker.url + "/stub/ws-echo", headers=as_user()) as ws:
            await ws.send_str("hi")
            assert (await asyncio.wait_for(ws.receive(), 5)).data == "hi"
            pid = next(int(r["pid"]) for r in broker.pod_records() if r["id"] == pod)
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 1011  # "the server met an unexpected condition", not a torn socket


async def test_a_pod_that_refuses_the_upgrade_is_answered_in_http(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(broker.url + "/stub/whoami", headers=as_user())
        assert refused.value.status == 200  # the pod's own answer, not one the broker made up
        async with http.get(broker.url + "/stub/whoami", headers=as_user()) as resp:
            assert resp.status == 200
    assert "Traceback" not in broker.log_text()
