"""A WebUI that answers broken HTTP: the browser gets a 502 page, never the bytes, and a
refused WebSocket handshake ends the browser's connection."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.support.procs import REPO, wait_for

RAW_POD = REPO / "tests" / "chaos" / "raw_pod.py"
FLEET = f"""\
backend: local
idle_timeout: 15m
outputs: {{outputs}}
profiles:
  - name: default
    min: 0
    buffer: 1
    max: 2
    probe: "http:/ok"
    local:
      command: [python, {RAW_POD}, --port, "{{{{port}}}}", --pod-id, "{{{{pod}}}}"]
      stop_grace: 1s
"""
ALICE = {"X-Forwarded-User": "alice"}


@pytest.fixture
def broker(brokers, tmp_path: Path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out"))
    b = brokers(fleet=fleet, SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    wait_for(lambda: len(b.pod_records()) >= 1, 20, what="a pod")
    return b


@pytest.mark.parametrize("path", ["/cl-te", "/dup-cl", "/switch"])
async def test_a_broken_answer_is_a_502_page(broker, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the pod warms up
            async with http.get(broker.url + "/ok", headers=ALICE) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        async with http.get(broker.url + path, headers=ALICE) as resp:
            body = await resp.text()
            assert resp.status == 502, body
            assert "broken answer" in body and "hello" not in body


def test_a_refused_websocket_handshake_closes_the_connection(broker) -> None:
    wait_for(lambda: _get(broker.port, "/ok").startswith(b"HTTP/1.1 200"), 20, what="the pod")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(
            b"GET /refuse HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):  # ends only when the broker closes
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"connection: close" in answer.lower()


def _get(port: int, path: str) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: alice\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            return sock.recv(65536)
    except OSError:
        return b""
