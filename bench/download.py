"""A 1 GiB download through the broker: its memory growth and throughput vs direct.

nginx (the broker's pod, through bench/nginx_pod.py) serves a 1 GiB file; a
plain socket client reads it, direct from nginx and through the broker, in
interleaved repetitions. A thread samples the broker's RSS every 20 ms while
it streams; growth = the highest sample minus the RSS just before.

    .venv/bin/python bench/download.py [--size-mib 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as `python bench/download.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench.harness import (
    NGINX_POD,
    USER_HEADER,
    Broker,
    Report,
    Stack,
    Table,
    claimed_addr,
    fmt_bytes,
    http_get,
    locate,
    median,
    say,
    tool_version,
    verdict,
    wait_for,
    write_fleet,
)

USER = "bench"
GROWTH_TARGET = 16 * 1000 * 1000  # "16 MB"
BUFFER = 1 << 20


def download(url: str, headers: dict[str, str]) -> tuple[int, float]:
    """GET url, read the body into one reused buffer; returns (bytes, seconds)."""
    parts = urlsplit(url)
    start = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        head = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        received = bytearray()
        while b"\r\n\r\n" not in received:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"{url}: connection closed before the headers")
            received += view[:n]
        header_end = received.index(b"\r\n\r\n") + 4
        status = int(received.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"{url}: HTTP {status}")
        length = None
        for line in received[:header_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = len(received) - header_end
        while length is None or body < length:
            n = sock.recv_into(view)
            if not n:
                break
            body += n
    return body, time.perf_counter() - start


class RssSampler(threading.Thread):
    def __init__(self, broker: Broker, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.broker, self.interval = broker, interval
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.broker.rss())
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, self.broker.rss())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    report = Report(f"{fmt_bytes(args.size_mib << 20)} download through the broker")
    nginx, nginx_note = locate("nginx", "nginx")
    headers = {USER_HEADER: USER}
    size = args.size_mib << 20
    rates: dict[str, list[float]] = {"direct": [], "broker": []}
    growths: list[int] = []
    with Stack("download", keep=args.keep) as stack:
        www = stack.dir / "www"
        www.mkdir(mode=0o755)
        (www / "warm.bin").write_bytes(b"\0" * (4 << 20))
        with open(www / "big.bin", "wb") as f:
            f.truncate(size)  # sparse: costs no disk, reads as zeros from the page cache
        redis = stack.redis()
        command = [
            "python",
            str(NGINX_POD),
            "--port",
            "{port}",
            "--pod-id",
            "{pod}",
            "--root",
            str(www),
            "--nginx",
            nginx or "",
        ]  # fmt: skip  (nginx's files: the sandbox's own /tmp)
        fleet = write_fleet(stack.dir / "fleet.yaml", command=command, outputs=stack.dir / "outputs",
                            buffer=1, max=2, probe="http:/internal/ping")  # fmt: skip
        broker = stack.broker(stack.dir / "data", fleet, redis.url)
        wait_for(
            lambda: http_get(broker.url + "/internal/ping", headers)[0] == 200, 60, "the user's pod"
        )
        urls = {"direct": claimed_addr(redis.client(), USER), "broker": broker.url}
        for url in urls.values():  # warm-up: connection pools, code paths, the page cache
            download(url + "/warm.bin", headers)
            download(url + "/big.bin", headers)
        time.sleep(1.0)
        rss_start = broker.rss()
        for rep in range(args.reps):
            for target in ["direct", "broker"] if rep % 2 == 0 else ["broker", "direct"]:
                sampler = None
                if target == "broker":
                    before = broker.rss()
                    sampler = RssSampler(broker)
                    sampler.start()
                got, seconds = download(urls[target] + "/big.bin", headers)
                if sampler is not None:
                    growths.append(sampler.stop() - before)
                if got != size:
                    raise RuntimeError(f"{target}: got {got} bytes of {size}")
                rates[target].append(size / seconds)
                say(f"{target:6} rep {rep + 1}: {size / seconds / 2**20:,.0f} MiB/s")
        rss_end = broker.rss()

    table = Table(
        ["path", "throughput (median)", "each run", "broker RSS growth (peak, target <= 16 MB)"]
    )
    for target in ("direct", "broker"):
        growth = ""
        if target == "broker":
            worst = max(growths)
            growth = f"{fmt_bytes(worst)} ({verdict(worst <= GROWTH_TARGET)}); runs: " + " / ".join(
                fmt_bytes(g) for g in growths
            )
        table.add(target, f"{median(rates[target]) / 2**20:,.0f} MiB/s",
                  " / ".join(f"{r / 2**20:,.0f}" for r in rates[target]), growth)  # fmt: skip
    ratio = median(rates["broker"]) / median(rates["direct"])
    table.add("broker/direct", f"{ratio:.2f}", "", "")
    report.tables.append(("", table))
    upstream = (f"nginx ({tool_version([nginx, '-v'])})" if nginx
                else f"bench/tiny_pod.py (nginx unavailable: {nginx_note})")  # fmt: skip
    report.notes += [
        f"Upstream: {upstream} serving a sparse {fmt_bytes(size)} file; client: one plain socket reading "
        f"into a reused {fmt_bytes(BUFFER)} buffer; {args.reps} interleaved repetitions after one warm-up each.",
        f"Broker RSS {fmt_bytes(rss_start)} before the measured runs, {fmt_bytes(rss_end)} after; "
        f"growth = peak of 20 ms samples during one download minus the RSS just before it.",
    ]
    return report


def main(argv: list[str] | None = None) -> None:
    print(run(argv).markdown())


if __name__ == "__main__":
    main()
