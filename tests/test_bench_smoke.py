"""The benchmarks' helpers work: wrk parsing, tables, the light pod, the Python load generator.

No timing is asserted here (timing belongs in bench/); this only keeps
`make bench` from breaking silently. The benches that need no outside tool
(wrk, nginx, configurable-http-proxy) also run end to end, at tiny sizes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench import claims, download, proxy, run_all, websockets  # noqa: F401 - they import
from bench.harness import TINY_POD, Table, free_port, http_get, percentile, wait_for
from bench.loadgen import parse_wrk, run_python

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8080/1k.bin
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms    2.31ms  40.12ms   91.23%
    Req/Sec    15.01k     1.20k   17.50k    70.00%
  Latency Distribution
     50%  612.00us
     75%    1.01ms
     90%    2.50ms
     99%   12.34ms
  149876 requests in 5.00s, 170.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  29975.20
Transfer/sec:     34.02MB
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.rps == pytest.approx(29975.20)
    assert result.p50 == pytest.approx(612e-6)
    assert result.p99 == pytest.approx(12.34e-3)
    assert result.requests == 149876
    assert result.errors == 7


def test_table_and_percentile() -> None:
    table = Table(["a", "bb"])
    table.add("x", 1)
    assert table.markdown().splitlines() == ["| a | bb |", "|---|----|", "| x | 1  |"]
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 99) == 4


@pytest.fixture
def tiny_pod():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-S", str(TINY_POD), "--port", str(port), "--pod-id", "pod-1"]
    )
    try:
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{port}/internal/ping")[0] == 200, 10, "tiny pod"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_tiny_pod_answers_and_echoes(tiny_pod: str) -> None:
    status, body = http_get(tiny_pod + "/stub/whoami", {"X-Forwarded-User": "ann"})
    assert status == 200 and json.loads(body) == {"pod": "pod-1", "user": "ann"}
    port = int(tiny_pod.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /queue/join HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert b" 101 " in head and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # the RFC 6455 example
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
        sock.sendall(b"\x81\x82" + mask + payload)
        assert sock.recv(16) == b"\x81\x02hi"


def test_python_load_generator_runs(tiny_pod: str) -> None:
    result = run_python(
        tiny_pod + "/stub/whoami", connections=2, duration=1, headers={"X-Forwarded-User": "b"}
    )
    assert result.requests > 0 and result.errors == 0 and result.tool == "python"


@pytest.mark.slow
def test_benches_without_outside_tools_run_end_to_end(tmp_path) -> None:  # noqa: ANN001
    """A bench broken by a change in what it reads (a pod record's layout, a metric's
    name) fails here, not at the next `make bench`."""
    out = tmp_path / "RESULTS.md"
    only = "claims,websockets,reaper"
    result = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--only", only, "--output", str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text()
    assert "FAILED" not in report
    assert "## Claim burst" in report and "## Idle WebSockets" in report
