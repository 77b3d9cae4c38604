"""Proxy throughput and latency: direct vs the broker vs configurable-http-proxy.

One nginx serves a 1 KiB and a 1 MiB file. It is the broker's pod (the local
backend starts it through bench/nginx_pod.py), the "direct" target, and the
upstream of JupyterHub's configurable-http-proxy (CHP), so all three columns
hit the very same server. For each size, each repetition runs every target
(in rotating order): a warm-up, then the measured run; medians of the
repetitions are reported. Redis commands per proxied request are the INFO
commandstats deltas over the broker's measured runs divided by its requests,
so everything the broker does meanwhile (controller, pub/sub, activity
flushes) is counted; commandstats also counts each command a Lua script runs,
so a MONITOR count of what clients send (a script call = 1) is shown beside it.

Two more columns take the broker's data path alone (bench/proxy_paths.py, one
process each, no login, routing or Redis): on aiohttp's internals (PodPool,
as the broker runs) and on aiohttp's public ClientSession. Their ratio is
what broker/proxy/aiohttp_internals.py buys. `--isolation none` keeps the
sandbox's relay hop (fleet/backends/relay.py) out of every column.

    .venv/bin/python bench/proxy.py [--duration 5] [--warmup 1] [--reps 3] [--connections 32]
                                    [--isolation auto|strict|none] [--no-paths]
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as `python bench/proxy.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench.harness import (
    NGINX_POD,
    REPO,
    USER_HEADER,
    Broker,
    Profiler,
    Report,
    Stack,
    Table,
    calls_delta,
    chp_binary,
    chp_version,
    claimed_addr,
    fmt_int,
    fmt_ms,
    free_port,
    http_get,
    locate,
    median,
    say,
    tool_version,
    verdict,
    wait_for,
    write_fleet,
)
from bench.loadgen import LoadResult, run_load
from broker.settings import auto_workers

USER = "bench"
SIZES = {"1 KiB": ("1k.bin", 1024), "1 MiB": ("1m.bin", 1 << 20)}
TARGETS = {"1 KiB": 0.15, "1 MiB": 0.30}  # broker/direct req/s, from the issue
REFERENCE = {  # measured on a 2-core machine, quoted by the issue
    "nginx+Lua": {"1 KiB": 0.109, "1 MiB": 0.218},
    "CHP": {"1 KiB": 0.114, "1 MiB": 0.199},
}
CHP_FACTOR = 1.3
REDIS_PER_REQUEST = 0.02
PATHS = {"PodPool": "pool", "ClientSession": "session"}  # column: bench/proxy_paths.py --client


def serving(broker: Broker) -> list[psutil.Process]:
    """The processes listening on the broker's port: itself, or its supervisor's workers."""
    assert broker.proc is not None
    top = psutil.Process(broker.proc.pid)
    return [
        p
        for p in [top, *top.children()]
        if any(c.laddr.port == broker.port for c in p.net_connections(kind="tcp"))
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measured run")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of warm-up before each run"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: 1k,1m")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="broker processes sharing its port (SO_REUSEPORT); 0 = as it ships "
        "(SDB_WORKERS=auto: one per usable CPU)",
    )
    parser.add_argument(
        "--python-load", action="store_true", help="use the Python load generator, not wrk"
    )
    parser.add_argument(
        "--no-nginx", action="store_true", help="serve the files with bench/tiny_pod.py"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the broker's measured runs, raw stacks here"
    )
    parser.add_argument(
        "--isolation",
        choices=("auto", "strict", "none"),
        default="auto",
        help="the pod's isolation (fleet file); none: no relay hop in front of the pod",
    )
    parser.add_argument(
        "--no-paths",
        action="store_true",
        help="leave out the data path alone, on aiohttp's internals and on ClientSession",
    )
    return parser.parse_args(argv)


def size_name(text: str) -> str:
    """'1 KiB', '1k', '1kib' -> '1 KiB' (and the same for MiB)."""
    key = text.strip().lower().replace(" ", "").removesuffix("ib").removesuffix("b")
    for name in SIZES:
        if name.lower().replace(" ", "").removesuffix("ib") == key:
            return name
    raise SystemExit(f"unknown size {text!r}: choose from {', '.join(SIZES)}")


def start_chp(stack: Stack, chp: str, upstream: str) -> str:
    port, api = free_port(), free_port()
    cmd = [chp, "--ip", "127.0.0.1", "--port", str(port), "--default-target", upstream,
           "--api-ip", "127.0.0.1", "--api-port", str(api), "--log-level", "warn"]  # fmt: skip
    stack.process(cmd, "chp.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(url + "/internal/ping")[0] == 200, 30, "configurable-http-proxy")
    return url


def dev_login(url: str, user: str) -> dict[str, str]:
    """The Cookie header of USER's `dev` login at URL. With isolation none a WebUI shares
    the broker's network and could use any address of this machine, so the broker
    trusts no header proxy here (broker/cli.py, _isolation_problem): the load logs in."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(url + "/_broker/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if token is None:
        raise SystemExit("the dev login page carries no CSRF token")
    form = urllib.parse.urlencode({"csrf_token": token[1], "user": user, "next": "/"})
    # the session cookie comes with the 302; where it leads does not matter here
    with contextlib.suppress(urllib.error.HTTPError):
        opener.open(url + "/_broker/login", data=form.encode(), timeout=10).read()
    session = [c for c in jar if c.name.endswith("sdb_session")]
    if not session:
        raise SystemExit("the dev login set no session cookie")
    return {"Cookie": f"{session[0].name}={session[0].value}"}


def start_path(stack: Stack, client: str, upstream: str) -> str:
    """bench/proxy_paths.py in front of UPSTREAM, with CLIENT (pool or session)."""
    port = free_port()
    cmd = [sys.executable, str(REPO / "bench" / "proxy_paths.py"), "--port", str(port),
           "--upstream", upstream, "--client", client]  # fmt: skip
    stack.process(cmd, f"path-{client}.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(url + "/internal/ping")[0] == 200, 30, f"the {client} data path")
    return url


# Complex by design (C901): one benchmark's script, its optional rivals (wrk, nginx, CHP) each
# an if; it reads top to bottom as the steps it measures, and splitting would scatter them.
def run(argv: list[str] | None = None) -> Report:  # noqa: C901
    args = parse_args(argv)
    args.processes = args.processes or auto_workers()
    sizes = [size_name(s) for s in args.sizes.split(",") if s.strip()]
    report = Report("Proxy: direct vs broker vs configurable-http-proxy")
    wrk, wrk_note = (None, "--python-load given") if args.python_load else locate("wrk", "wrk")
    nginx, nginx_note = (None, "--no-nginx given") if args.no_nginx else locate("nginx", "nginx")
    chp, chp_note = chp_binary()
    headers = {USER_HEADER: USER}

    with Stack("proxy", keep=args.keep) as stack:
        www = stack.dir / "www"
        www.mkdir(mode=0o755)
        for name, size in SIZES.values():
            (www / name).write_bytes(os.urandom(size))
        redis = stack.redis()
        command = ["python", str(NGINX_POD), "--port", "{port}", "--pod-id", "{pod}", "--root", str(www),
                   "--nginx", nginx or ""]  # fmt: skip
        if args.isolation == "none":  # a sandboxed pod sees the host read-only: its own /tmp
            command += ["--tmp-base", str(stack.dir / "nginx")]
        fleet = write_fleet(stack.dir / "fleet.yaml", command=command, outputs=stack.dir / "outputs",
                            buffer=1, max=2, probe="http:/internal/ping",
                            isolation=args.isolation)  # fmt: skip
        env = {"SDB_WORKERS": str(args.processes)}
        if args.isolation == "none":
            env |= {"SDB_AUTH": "dev", "SDB_TRUSTED_PROXIES": ""}
        broker = stack.broker(stack.dir / "data", fleet, redis.url, env=env)
        wait_for(
            lambda: len(serving(broker)) == args.processes, 30, "every broker worker listening"
        )
        if args.isolation == "none":
            headers = dev_login(broker.url, USER)
        say(f"broker on {broker.url}; waiting for {USER}'s pod")
        probe = f"{broker.url}/{SIZES['1 KiB'][0]}"
        wait_for(
            lambda: http_get(probe, headers)[0] == 200,
            60,
            "the bench user's pod through the broker",
        )
        upstream = claimed_addr(redis.client(), USER)
        urls = {"direct": upstream, "broker": broker.url}
        if chp:
            urls["CHP"] = start_chp(stack, chp, upstream)
        if not args.no_paths:
            for column, client in PATHS.items():
                urls[column] = start_path(stack, client, upstream)

        results: dict[str, dict[str, list[LoadResult]]] = {s: {t: [] for t in urls} for s in sizes}
        redis_calls: dict[str, Counter[str]] = {s: Counter() for s in sizes}  # INFO commandstats
        sent_calls: dict[str, Counter[str]] = {s: Counter() for s in sizes}  # MONITOR
        monitor = stack.redis_monitor(redis)
        order = list(urls)
        for size in sizes:
            path = "/" + SIZES[size][0]
            for rep in range(args.reps):
                for target in order[rep % len(order) :] + order[: rep % len(order)]:
                    url = urls[target] + path
                    run_load(
                        wrk,
                        url,
                        connections=args.connections,
                        duration=args.warmup,
                        headers=headers,
                    )
                    before = redis.command_calls() if target == "broker" else {}
                    sent_before = monitor.snapshot() if target == "broker" else {}
                    spy = args.profile if target == "broker" else None
                    with Profiler(
                        serving(broker)[0].pid, spy, f"proxy-{SIZES[size][0]}-rep{rep + 1}"
                    ):
                        result = run_load(
                            wrk,
                            url,
                            connections=args.connections,
                            duration=args.duration,
                            headers=headers,
                        )
                    if target == "broker":
                        redis_calls[size].update(calls_delta(before, redis.command_calls()))
                        sent_calls[size].update(calls_delta(sent_before, monitor.snapshot()))
                    results[size][target].append(result)
                    say(f"{size} {target:6} rep {rep + 1}: {result.rps:,.0f} req/s, "
                        f"p50 {fmt_ms(result.p50)}, p99 {fmt_ms(result.p99)}, errors {result.errors}")  # fmt: skip
        broker_rss = max(p.memory_info().rss for p in serving(broker))

    # --- tables ---------------------------------------------------------------
    figures = Table(["size", "path", "req/s (median)", "p50", "p99", "req/s of each run", "errors"])
    med: dict[str, dict[str, tuple[float, float, float]]] = {}
    for size in sizes:
        med[size] = {}
        for target, runs in results[size].items():
            m = (
                median(r.rps for r in runs),
                median(r.p50 for r in runs),
                median(r.p99 for r in runs),
            )
            med[size][target] = m
            each = " / ".join(fmt_int(r.rps) for r in runs)
            figures.add(
                size,
                target,
                fmt_int(m[0]),
                fmt_ms(m[1]),
                fmt_ms(m[2]),
                each,
                sum(r.errors for r in runs),
            )
    report.tables.append(("", figures))

    ratios = Table(["measure", *sizes, "target", "reference (2-core machine, from the issue)"])
    has_chp = "CHP" in urls

    def cells(fn) -> list[str]:
        return [fn(size) for size in sizes]

    def broker_direct(size: str) -> str:
        r = med[size]["broker"][0] / med[size]["direct"][0]
        return f"{r:.3f} ({verdict(r >= TARGETS[size])})"

    ratios.add("broker/direct req/s", *cells(broker_direct),
               " / ".join(f">= {TARGETS[s]:.2f} at {s}" for s in sizes),
               "nginx+Lua " + " / ".join(f"{REFERENCE['nginx+Lua'][s]:.3f}" for s in sizes))  # fmt: skip
    if has_chp:

        def broker_chp(size: str) -> str:
            r = med[size]["broker"][0] / med[size]["CHP"][0]
            return f"{r:.2f}x ({verdict(r >= CHP_FACTOR)})"

        def p99_vs(size: str) -> str:
            b, c = med[size]["broker"][2], med[size]["CHP"][2]
            return f"{fmt_ms(b)} vs {fmt_ms(c)} ({verdict(b < c)})"

        def chp_direct(size: str) -> str:
            return f"{med[size]['CHP'][0] / med[size]['direct'][0]:.3f}"

        ratios.add("broker/CHP req/s", *cells(broker_chp), f">= {CHP_FACTOR}x", "")
        ratios.add("p99 broker vs CHP", *cells(p99_vs), "broker lower", "")
        ratios.add("CHP/direct req/s", *cells(chp_direct), "(context)",
                   "CHP " + " / ".join(f"{REFERENCE['CHP'][s]:.3f}" for s in sizes))  # fmt: skip

    def per_request(size: str) -> str:
        requests = sum(r.requests for r in results[size]["broker"])
        value = sum(redis_calls[size].values()) / max(requests, 1)
        return f"{value:.4f} ({verdict(value <= REDIS_PER_REQUEST)})"

    def sent_per_request(size: str) -> str:
        requests = sum(r.requests for r in results[size]["broker"])
        return f"{sum(sent_calls[size].values()) / max(requests, 1):.4f}"

    if not args.no_paths:

        def internals_gain(size: str) -> str:
            return f"{med[size]['PodPool'][0] / med[size]['ClientSession'][0]:.2f}x"

        ratios.add("PodPool/ClientSession req/s (the data path alone)",
                   *cells(internals_gain), "> 1 keeps aiohttp_internals.py", "")  # fmt: skip
    ratios.add("Redis commands per proxied request (INFO commandstats)", *cells(per_request),
               f"<= {REDIS_PER_REQUEST}", "nginx+Lua: 2, plus a new Redis connection")  # fmt: skip
    ratios.add(
        "... of which sent by the broker (MONITOR; a script call = 1)",
        *cells(sent_per_request),
        "",
        "",
    )
    report.tables.append(("Ratios (of the medians) and targets:", ratios))

    # --- how it was measured ----------------------------------------------------
    load = f"wrk ({tool_version([wrk, '-v'])}), {min(os.cpu_count() or 1, args.connections)} threads" if wrk else (
        "Python load generator (wrk unavailable: " + wrk_note + "); slower than wrk and on the same "
        "cores, it understates the direct column, so ratios to direct come out too high")  # fmt: skip
    report.notes.append(
        f"Load: {load}, {args.connections} connections, {args.warmup:g} s warm-up + {args.duration:g} s measured, "
        f"{args.reps} interleaved repetitions, medians; the same headers on every target."
    )
    upstream_desc = (f"nginx ({tool_version([nginx, '-v'])}, worker_processes auto, sendfile, access log off)"
                     if nginx else f"bench/tiny_pod.py (nginx unavailable: {nginx_note})")  # fmt: skip
    report.notes.append(
        f"Upstream: {upstream_desc}, the broker's one claimed pod; every column hits it."
    )
    where = (
        "; the broker trusts no header proxy beside unsandboxed WebUIs, so the load sends "
        "a `dev` login's session cookie instead of the user header"
        if args.isolation == "none"
        else " (the sandbox's relay hop sits in front of the pod, direct included)"
    )
    report.notes.append(f"Pods' isolation: {args.isolation}{where}.")
    if not args.no_paths:
        report.notes.append(
            "PodPool and ClientSession: bench/proxy_paths.py, one process each (uvloop), the "
            "broker's upstream_headers and relay_answer to the same pod; the first sends with "
            "PodPool (broker/proxy/aiohttp_internals.py, as the broker does), the second with "
            "aiohttp's public ClientSession; no login, routing or Redis."
        )
    report.notes.append(
        f"configurable-http-proxy {chp_version()} (node {tool_version(['node', '--version'])}), default options."
        if has_chp
        else f"configurable-http-proxy column missing: {chp_note}"
    )
    shipped = auto_workers()
    report.notes.append(
        f"Broker: `sdbroker serve` ({'dev' if args.isolation == 'none' else 'header'} auth, external Redis), {args.processes} "
        f"process{'es' if args.processes > 1 else ''} on its port; as it ships, SDB_WORKERS=auto "
        f"starts {shipped} on this machine ({'this run' if args.processes == shipped else 'not this run'}). "
        f"Started as `SDB_WORKERS={args.processes}`{' (a supervisor and its workers)' if args.processes > 1 else ''}. "
        f"RSS at the end {broker_rss / 2**20:.0f} MiB{' (one process)' if args.processes > 1 else ''}."
    )
    for size in sizes:
        requests = sum(r.requests for r in results[size]["broker"])
        top = ", ".join(f"{name} {n}" for name, n in redis_calls[size].most_common(8)) or "none"
        sent = ", ".join(f"{name} {n}" for name, n in sent_calls[size].most_common(8)) or "none"
        report.notes.append(
            f"Redis during the broker's {size} runs ({requests:,} requests): commandstats {top}; "
            f"sent by clients (MONITOR) {sent}. commandstats also counts the commands Lua scripts run."
        )
    return report


def main(argv: list[str] | None = None) -> None:
    print(run(argv).markdown())


if __name__ == "__main__":
    main()
