"""Idle WebSockets through the broker: the broker's memory per connection.

One user, one light pod (bench/tiny_pod.py, which echoes WebSocket messages).
After a warm-up, N WebSockets are opened through the broker and left idle; the
broker's RSS with all of them open, minus its RSS before, divided by N, is the
cost of one bridged connection (client socket, pod socket and what the broker
keeps for them). A sample of them echoes a message to show they are bridged.

The bench raises its own fd limit (RLIMIT_NOFILE) before starting anything,
so the broker and the pod inherit it; see the notes for what the broker needs.

    .venv/bin/python bench/websockets.py [--connections 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as `python bench/websockets.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench.harness import (
    TINY_POD,
    USER_HEADER,
    Broker,
    Report,
    Stack,
    Table,
    fmt_bytes,
    http_get,
    pod_records,
    raise_fd_limit,
    say,
    verdict,
    wait_for,
    write_fleet,
)

USER = "bench"
PER_CONNECTION_TARGET = 20 * 1024
BATCH = 200
SAMPLE = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds all stay idle before measuring"
    )
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


async def hold(broker: Broker, count: int, idle: float, measure) -> dict:
    import aiohttp

    url = broker.url + "/queue/join"
    headers = {USER_HEADER: USER}
    out: dict = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def open_one() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await http.ws_connect(
                    url, headers=headers, autoping=False, heartbeat=None, compress=0
                )
            except (TimeoutError, aiohttp.ClientError, OSError):
                return None

        async def echo(ws: aiohttp.ClientWebSocketResponse, text: str) -> bool:
            try:
                await ws.send_str(text)
                msg = await asyncio.wait_for(ws.receive(), 10)
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
            return msg.type is aiohttp.WSMsgType.TEXT and msg.data == text

        # Warm-up: the claim, the route cache, the code paths of a bridged WebSocket.
        warm = [ws for ws in await asyncio.gather(*(open_one() for _ in range(SAMPLE))) if ws]
        await asyncio.gather(*(echo(ws, "warm") for ws in warm))
        await asyncio.gather(*(ws.close() for ws in warm))
        await asyncio.sleep(1.0)
        out["before"] = measure()

        start = time.perf_counter()
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        failed = 0
        for first in range(0, count, BATCH):
            batch = await asyncio.gather(*(open_one() for _ in range(min(BATCH, count - first))))
            sockets += [ws for ws in batch if ws is not None]
            failed += sum(ws is None for ws in batch)
        out["open_seconds"] = time.perf_counter() - start
        out["opened"], out["failed"] = len(sockets), failed
        await asyncio.sleep(idle)
        out["open"] = measure()
        sample = sockets[:: max(1, len(sockets) // SAMPLE)][:SAMPLE]
        out["echoed"] = sum(
            await asyncio.gather(*(echo(ws, f"hello {i}") for i, ws in enumerate(sample)))
        )
        out["sampled"] = len(sample)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.sleep(2.0)
        out["closed"] = measure()
    return out


def run(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    report = Report("Idle WebSockets through the broker")
    soft_before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit, fd_note = raise_fd_limit(2 * args.connections + 4096)
    count = args.connections
    if limit < 2 * count + 512:
        count = max(100, (limit - 512) // 2)
        fd_note += f"; only {count} connections fit under the fd limit {limit}"

    with Stack("websockets", keep=args.keep) as stack:
        redis = stack.redis()
        command = ["python", "-S", str(TINY_POD), "--port", "{port}", "--pod-id", "{pod}"]
        fleet = write_fleet(stack.dir / "fleet.yaml", command=command, outputs=stack.dir / "outputs",
                            buffer=1, max=2, probe="a1111")  # fmt: skip
        broker = stack.broker(stack.dir / "data", fleet, redis.url)
        wait_for(
            lambda: http_get(broker.url + "/stub/whoami", {USER_HEADER: USER})[0] == 200,
            60,
            "the user's pod",
        )
        pod_pid = next(
            int(r["pid"]) for r in pod_records(stack.dir / "data") if r.get("user") == USER
        )
        proc = psutil.Process(broker.proc.pid)

        def measure() -> dict:
            return {
                "rss": proc.memory_info().rss,
                "fds": proc.num_fds(),
                "pod_fds": psutil.Process(pod_pid).num_fds(),
            }

        say(f"opening {count} WebSockets through {broker.url}")
        out = asyncio.run(hold(broker, count, args.idle, measure))
        say(
            f"{out['opened']} open after {out['open_seconds']:.1f}s; RSS {fmt_bytes(out['open']['rss'])}"
        )

    before, opened, closed = out["before"], out["open"], out["closed"]
    per = (opened["rss"] - before["rss"]) / max(out["opened"], 1)
    table = Table(["WebSockets open", "broker RSS before", "with all open", "per connection (target <= 20 KiB)",
                   "after closing", "broker fds open", "time to open all", "echo sample"])  # fmt: skip
    table.add(f"{out['opened']:,}" + (f" ({out['failed']} failed)" if out["failed"] else ""),
              fmt_bytes(before["rss"]), fmt_bytes(opened["rss"]),
              f"{per / 1024:.1f} KiB ({verdict(per <= PER_CONNECTION_TARGET)})", fmt_bytes(closed["rss"]),
              f"{opened['fds']:,} (+{opened['fds'] - before['fds']:,})", f"{out['open_seconds']:.1f} s",
              f"{out['echoed']}/{out['sampled']}")  # fmt: skip
    report.tables.append(("", table))
    report.notes += [
        f"Connections opened {BATCH} at a time by an aiohttp client to `/queue/join` (header auth), then idle "
        f"{args.idle:g} s before measuring; per connection = (RSS with all open - RSS before) / open.",
        f"Each bridged WebSocket holds two broker sockets (client and pod): the broker needs about "
        f"2 x {count:,} + a few hundred fds. The broker inherits this bench's RLIMIT_NOFILE soft limit: "
        + (
            f"raised from {soft_before:,} to {limit:,}"
            if limit != soft_before
            else f"{limit:,}, high enough"
        )
        + f" before the broker started{'; ' + fd_note if fd_note else ''}.",
        f"Pod side (bench/tiny_pod.py): {opened['pod_fds'] - before['pod_fds']:,} more fds with all open.",
    ]
    return report


def main(argv: list[str] | None = None) -> None:
    print(run(argv).markdown())


if __name__ == "__main__":
    main()
