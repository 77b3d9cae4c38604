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

`run(argv)` returns the harness's Report, so bench/run_all.py can list it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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

if __package__ in (None, ""):  # run as `python bench/reaper.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import RedisServer, Report, Table, free_port, say, verdict
from fleet import FleetStore, connect_redis, keys, parse_spec
from fleet.activity_rules import ActivityClassifier
from fleet.scripts import _SOURCES
from reaper import ReapCycle

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


POPULATE = """
local first, n, now, addr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local step, idle, rounds, idle_timeout = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8])
local pod_prefix, claim_prefix, claimed, activity = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local since = now - 3600
local t = function(x) return string.format('%.6f', x) end
for i = first, first + n - 1 do
  local user = string.format('user%06d@example.com', i)
  local pod = string.format('default-%06d', i)
  local last = now - (i % 600)
  if i % step == 0 and i / step < idle * rounds then
    last = now - idle_timeout - 10 + 100 * math.floor((i / step) / idle)
  end
  redis.call('HSET', pod_prefix .. pod, 'id', pod, 'profile', 'default', 'state', 'claimed',
    'addr', addr, 'user', user, 'created', t(since - 60), 'ready_at', t(since - 30),
    'claimed_at', t(since))
  redis.call('HSET', claim_prefix .. user, 'pod', pod, 'profile', 'default', 'addr', addr,
    'since', t(since))
  redis.call('ZADD', claimed, since, pod)
  redis.call('ZADD', activity, last, user)
end
"""


async def populate(redis: Redis, sessions: int, idle: int, now: float, addr: str) -> None:
    """`sessions` claimed pods; `idle` more of them go idle at now, now+100, now+200.

    Written by a Lua loop in Redis, 10,000 sessions a call: setting up is not what is measured.
    """
    await redis.set(keys.STATE_MARKER, repr(now))
    step = sessions // (idle * ROUNDS)
    batch = 10_000
    for first in range(0, sessions, batch):
        n = min(batch, sessions - first)
        await redis.eval(
            POPULATE, 0, first, n, repr(now), addr, step, idle, ROUNDS, IDLE,
            keys.POD_PREFIX, keys.CLAIM_PREFIX, keys.claimed("default"), keys.ACTIVITY,
        )  # fmt: skip


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


async def measure_all(url: str, sessions: int, idle: int) -> dict[str, Any]:
    runner, addr, hits = await fake_webui()
    admin = connect_redis(url)
    redis = connect_redis(url)
    counted = Counted(redis)
    try:
        now = time.time()
        t = time.perf_counter()
        await populate(admin, sessions, idle, now, addr)
        say(f"populated {sessions:,} sessions in {time.perf_counter() - t:.1f}s")
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

    return {"rows": rows, "base": base, "warm": warm, "cold": cold}


def run(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--idle", type=int, default=100)
    args = parser.parse_args(argv)
    sessions, idle = args.sessions, args.idle
    with tempfile.TemporaryDirectory(prefix="sdb-bench-reaper-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            got = asyncio.run(measure_all(server.url, sessions, idle))
        finally:
            server.stop()
    rows, base = got["rows"], got["base"]

    def med(case: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[case])

    report = Report(f"Reaper: one cycle over {sessions:,} sessions in Redis")
    table = Table(
        ["case", "client commands", "round trips", "Redis calls (incl. in Lua)", "Redis time",
         "cycle wall time", "busy probes (HTTP)", "target", "verdict"]
    )  # fmt: skip
    for case, label, k in (("idle", f"{idle} idle", idle), ("none", "0 idle", 0)):
        target = 5 + 3 * k
        ok = med(case, "client") <= target and med(case, "redis_ms") < 100
        table.add(
            label,
            f"{med(case, 'client'):.0f}",
            f"{med(case, 'trips'):.0f}",
            f"{med(case, 'redis_calls'):.0f}",
            f"{med(case, 'redis_ms'):.2f} ms",
            f"{med(case, 'wall_ms'):.1f} ms",
            f"{med(case, 'probes'):.0f}",
            f"<= {target} commands, < 100 ms",
            verdict(ok),
        )
    table.add(
        "published SCAN + HGETALL",
        f"{base['client']:.0f}",
        f"{base['trips']:.0f} (pipelined here; {base['client']:.0f} as published)",
        f"{base['redis_calls']:.0f}",
        f"{base['redis_ms']:.2f} ms",
        f"{base['wall_ms']:.0f} ms",
        "-",
        "-",
        "-",
    )
    report.tables.append(("Median of three cycles.", table))
    per = (med("idle", "client") - med("none", "client")) / idle
    reclaimed = [r["result"].reclaimed for r in rows["idle"]]
    report.notes += [
        f"Sessions ended per {idle}-idle cycle: {reclaimed}; client commands per idle session: "
        f"{per:.2f} (end_pod, XADD audit, SET notice; the candidates are one script call).",
        "Client commands are what the reaper sent (a pipeline's commands counted one by one); "
        "Redis calls are INFO commandstats, which also counts each command a Lua script runs; "
        "Redis time is the commandstats time of the commands the reaper sent (EVALSHA's "
        "includes the script's own calls).",
        "Busy probes go to a fake WebUI on loopback that answers not busy: HTTP, not Redis "
        "(two requests per a1111 probe, 32 at a time).",
        f"The published design: {base['client'] / med('idle', 'client'):,.0f}x the commands "
        f"of this reaper's {idle}-idle cycle.",
        f"Activity classifier (runs on every proxied request): {got['warm']:.0f} ns per request "
        f"memoised, {got['cold']:.0f} ns for a path seen the first time.",
    ]
    return report


def main(argv: list[str] | None = None) -> None:
    print(run(argv).markdown())


if __name__ == "__main__":
    main()
