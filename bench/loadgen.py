"""HTTP load: wrk when installed, else a Python load generator (clearly labelled).

Both are closed loops: N keep-alive connections, each sending its next request
when the previous answer has been read in full, for a fixed duration.
`run_load` returns req/s and the p50/p99 of request latency.

The Python fallback is several processes of raw asyncio streams; it is much
slower than wrk, so its figures say more about itself than about the target
when the target is fast (a note says so wherever it is used).

    python bench/loadgen.py --worker URL --connections 16 --duration 5 [--header 'K: V']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as `python bench/loadgen.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench.harness import percentile

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class LoadResult:
    rps: float
    p50: float  # seconds
    p99: float  # seconds
    requests: int
    errors: int  # socket errors, timeouts and non-2xx/3xx answers
    tool: str


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read req/s, p50, p99 and errors from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return LoadResult(rps, p50, p99, requests, errors, "wrk")


def run_wrk(wrk: str, url: str, *, connections: int, duration: float, headers: dict[str, str],
            threads: int | None = None) -> LoadResult:  # fmt: skip
    threads = threads or max(1, min(os.cpu_count() or 1, connections))
    seconds = max(1, round(duration))  # wrk takes whole seconds
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return parse_wrk(done.stdout)


def run_python(url: str, *, connections: int, duration: float, headers: dict[str, str],
               processes: int | None = None) -> LoadResult:  # fmt: skip
    """The fallback: `processes` workers sharing `connections`, results merged."""
    processes = max(1, min(processes or os.cpu_count() or 1, connections))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        url,
        "--duration",
        str(duration),
    ]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    workers = []
    for i in range(processes):
        share = connections // processes + (1 if i < connections % processes else 0)
        workers.append(
            subprocess.Popen([*cmd, "--connections", str(share)], stdout=subprocess.PIPE, text=True)
        )
    latencies: list[float] = []
    requests = errors = 0
    for proc in workers:
        out, _ = proc.communicate(timeout=duration + 60)
        data = json.loads(out)
        requests += data["requests"]
        errors += data["errors"]
        latencies += [x / 1e6 for x in data["latencies_us"]]
    latencies.sort()
    return LoadResult(requests / duration, percentile(latencies, 50), percentile(latencies, 99), requests, errors,
                      "python")  # fmt: skip


def run_load(
    wrk: str | None, url: str, *, connections: int, duration: float, headers: dict[str, str]
) -> LoadResult:
    if wrk:
        return run_wrk(wrk, url, connections=connections, duration=duration, headers=headers)
    return run_python(url, connections=connections, duration=duration, headers=headers)


# --- the Python worker ------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(url: str, headers: Sequence[str], deadline: float, out: dict) -> None:
    parts = urlsplit(url)
    request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
               f"Host: {parts.netloc}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()  # fmt: skip
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    parts.hostname, parts.port, limit=1 << 20
                )
            start = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            out["latencies_us"].append(int((time.perf_counter() - start) * 1e6))
            out["requests"] += 1
            if status >= 400:
                out["errors"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out["errors"] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _worker(url: str, connections: int, duration: float, headers: Sequence[str]) -> dict:
    out = {"requests": 0, "errors": 0, "latencies_us": []}
    deadline = time.monotonic() + duration
    await asyncio.gather(*(_connection(url, headers, deadline, out) for _ in range(connections)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="URL", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(
        json.dumps(asyncio.run(_worker(args.worker, args.connections, args.duration, args.header)))
    )


if __name__ == "__main__":
    main()
