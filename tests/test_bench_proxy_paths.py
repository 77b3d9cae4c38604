"""bench/proxy_paths.py proxies correctly both ways, so its req/s compare like with like.

bench/proxy.py prints PodPool/ClientSession req/s to keep broker/proxy/
aiohttp_internals.py justified by a number; a path that answered errors, or
skipped the broker's header work, would make that number meaningless.
No timing here: the figures live in bench/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import TINY_POD, free_port, http_get, wait_for

PATHS = Path(__file__).resolve().parents[1] / "bench" / "proxy_paths.py"


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    body = os.urandom(300_000)  # more than relay_answer's one-write size: streamed
    (tmp_path / "f.bin").write_bytes(body)
    port = free_port()
    cmd = [sys.executable, "-S", str(TINY_POD), "--port", str(port), "--pod-id", "p", "--root", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/internal/ping")[0] == 200, 10, "tiny pod")
        yield url, body
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("client", ["pool", "session"])
def test_each_path_relays_the_answer_and_the_broker_headers(
    pod: tuple[str, bytes], client: str
) -> None:
    upstream, body = pod
    port = free_port()
    cmd = [sys.executable, str(PATHS), "--port", str(port), "--upstream", upstream, "--client", client]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/internal/ping")[0] == 200, 20, f"the {client} path")
        assert http_get(url + "/f.bin") == (200, body)
        # The pod is told who it serves by the broker's upstream_headers, never the client.
        status, who = http_get(url + "/stub/whoami", {"X-Forwarded-User": "mallory"})
        assert status == 200 and json.loads(who)["user"] == "bench"
    finally:
        proc.terminate()
        proc.wait(10)
