"""Claim burst: first requests of many users over two broker processes on one Redis.

The fleet is warm before the burst starts: one light pod (bench/tiny_pod.py,
about 10 MB each) per user, all Ready. Each user sends their first request to
both brokers at once (so the two brokers race for the same user), a fixed
number of request pairs in flight. Every answer is the pod's /stub/whoami
(pod id, and the user the broker said it was for).

Duplicates are counted twice over, both must be 0: in Redis (a pod in two
users' claim hashes, or a pod hash naming another user than the claim) and in
the pods' answers (a user answered by two pods, a pod answering two users, or
a pod told it serves another user than the one who asked).

    .venv/bin/python bench/claims.py [--users 500] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as `python bench/claims.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import (  # noqa: E402
    TINY_POD,
    USER_HEADER,
    Broker,
    Profiler,
    Report,
    Stack,
    Table,
    fmt_int,
    fmt_ms,
    percentile,
    pod_records,
    say,
    verdict,
    wait_ready_pods,
    write_fleet,
)

P99_TARGET = 0.050
POD_BUDGET = 16 << 20  # memory we plan per light pod, with a margin


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (pairs x 2)"
    )
    parser.add_argument(
        "--warm-timeout", type=float, default=300.0, help="seconds to wait for the warm fleet"
    )
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the brokers during the burst, raw stacks here"
    )
    return parser.parse_args(argv)


def affordable_users(wanted: int) -> tuple[int, str]:
    avail = psutil.virtual_memory().available - (1 << 30)
    fits = max(10, avail // POD_BUDGET)
    if fits >= wanted:
        return wanted, ""
    return int(
        fits
    ), f"only {fits} users: {wanted} light pods would not fit in the memory available"


async def burst(brokers: list[Broker], users: list[str], concurrency: int) -> list[dict]:
    import aiohttp

    answers: list[dict] = []
    pending: asyncio.Queue[str] = asyncio.Queue()
    for user in users:
        pending.put_nowait(user)

    async def first_request(http: aiohttp.ClientSession, broker: Broker, user: str) -> None:
        start = time.perf_counter()
        answer: dict = {
            "user": user,
            "broker": broker.port,
            "status": 0,
            "pod": None,
            "pod_user": None,
        }
        try:
            async with http.get(broker.url + "/stub/whoami", headers={USER_HEADER: user}) as resp:
                answer["status"] = resp.status
                if resp.status == 200:
                    body = await resp.json(content_type=None)
                    answer["pod"], answer["pod_user"] = body.get("pod"), body.get("user")
                else:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            answer["error"] = repr(exc)
        answer["latency"] = time.perf_counter() - start
        answers.append(answer)

    async def worker(http: aiohttp.ClientSession) -> None:
        while not pending.empty():
            user = pending.get_nowait()
            await asyncio.gather(*(first_request(http, b, user) for b in brokers))

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(max(1, concurrency // len(brokers)))))
    return answers


def redis_duplicates(client, users: list[str]) -> tuple[int, int, str]:  # noqa: ANN001
    """(duplicates, claims found, detail) from the claim hashes and the pod hashes."""
    from fleet import keys

    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hget(keys.claim(user), "pod")
    pods = dict(zip(users, pipe.execute(), strict=True))
    owners: dict[str, set[str]] = defaultdict(set)
    for user, pod in pods.items():
        if pod:
            owners[pod].add(user)
    shared = [p for p, us in owners.items() if len(us) > 1]
    pipe = client.pipeline(transaction=False)
    for pod in owners:
        pipe.hget(keys.pod(pod), "user")
    mismatched = [p for p, u in zip(owners, pipe.execute(), strict=True) if u not in owners[p]]
    # Any other claim hash (a user we did not send) on one of these pods is a duplicate too.
    strangers = 0
    for key in client.scan_iter(match=keys.CLAIM_PREFIX + "*", count=1000):
        user = key.removeprefix(keys.CLAIM_PREFIX)
        if user not in pods and client.hget(key, "pod") in owners:
            strangers += 1
    found = sum(1 for p in pods.values() if p)
    detail = f"{len(shared)} pods in two claims, {len(mismatched)} pod hashes naming another user, {strangers} stray claims"
    return len(shared) + len(mismatched) + strangers, found, detail


def answer_duplicates(answers: list[dict]) -> tuple[int, str]:
    pods_of: dict[str, set[str]] = defaultdict(set)
    users_of: dict[str, set[str]] = defaultdict(set)
    told_wrong = 0
    for a in answers:
        if a["pod"] is None:
            continue
        pods_of[a["user"]].add(a["pod"])
        users_of[a["pod"]].add(a["user"])
        told_wrong += a["pod_user"] != a["user"]
    two_pods = sum(1 for ps in pods_of.values() if len(ps) > 1)
    two_users = sum(1 for us in users_of.values() if len(us) > 1)
    detail = f"{two_pods} users answered by two pods, {two_users} pods answering two users, {told_wrong} pods told another user"
    return two_pods + two_users + told_wrong, detail


def run(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    report = Report("Claim burst: first requests over two broker processes, warm fleet")
    n_users, memory_note = affordable_users(args.users)
    users = [f"user{i:04d}" for i in range(n_users)]
    random.Random(8).shuffle(users)

    with Stack("claims", keep=args.keep) as stack:
        redis = stack.redis()
        command = ["python", "-S", str(TINY_POD), "--port", "{port}", "--pod-id", "{pod}"]
        fleet = write_fleet(stack.dir / "fleet.yaml", command=command, outputs=stack.dir / "outputs",
                            buffer=n_users, max=n_users, probe="a1111")  # fmt: skip
        data = stack.dir / "data"  # the local backend's records: shared by both brokers
        started = time.monotonic()
        brokers = [stack.broker(data, fleet, redis.url), stack.broker(data, fleet, redis.url)]
        say(f"brokers on {', '.join(b.url for b in brokers)}; warming {n_users} pods")
        client = redis.client()
        wait_ready_pods(client, n_users, args.warm_timeout)
        warm_seconds = time.monotonic() - started
        say(f"{n_users} pods ready after {warm_seconds:.1f}s")
        time.sleep(1.0)  # let the controller settle
        procs = [psutil.Process(b.proc.pid) for b in brokers]
        cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
        time.sleep(3.0)  # idle: the controller leader is the broker that works
        idle_cpu = [
            (sum(p.cpu_times()[:2]) - c) / 3.0 for p, c in zip(procs, cpu_before, strict=True)
        ]
        # The controller leader works while idle (it reconciles); tell it only when it shows.
        busiest = max(idle_cpu)
        leader = (
            brokers[idle_cpu.index(busiest)].port if busiest > 2 * min(idle_cpu) + 0.005 else None
        )
        pod_rss = []
        for record in pod_records(data):
            with contextlib.suppress(psutil.Error):
                pod_rss.append(psutil.Process(int(record["pid"])).memory_info().rss)
        pod_rss.sort()

        with contextlib.ExitStack() as spies:
            for b in brokers:
                spies.enter_context(Profiler(b.proc.pid, args.profile, f"claims-broker-{b.port}"))
            start = time.perf_counter()
            answers = asyncio.run(burst(brokers, users, args.concurrency))
            wall = time.perf_counter() - start
        say(f"{len(answers)} first requests in {wall:.2f}s")
        dup_redis, claims_found, redis_detail = redis_duplicates(client, users)
        dup_answers, answers_detail = answer_duplicates(answers)

    ok = [a for a in answers if a["status"] == 200 and a["pod"]]
    failed = len(answers) - len(ok)
    latencies = sorted(a["latency"] for a in answers)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    table = Table(["users", "first requests", "brokers", "in flight", "claims/s", "p50", "p99 (target <= 50 ms)",
                   "max", "duplicates in Redis", "duplicates in pods' answers", "failed requests"])  # fmt: skip
    table.add(n_users, len(answers), len(brokers), args.concurrency, fmt_int(claims_found / wall), fmt_ms(p50),
              f"{fmt_ms(p99)} ({verdict(p99 <= P99_TARGET)})", fmt_ms(latencies[-1] if latencies else float('nan')),
              f"{dup_redis} ({verdict(dup_redis == 0)})", f"{dup_answers} ({verdict(dup_answers == 0)})",
              failed)  # fmt: skip
    report.tables.append(("", table))
    statuses: dict[object, int] = defaultdict(int)
    for a in answers:
        if not (a["status"] == 200 and a["pod"]):
            statuses[a.get("error", a["status"])] += 1
    report.notes += [
        f"Each of {n_users} users sends its first request (GET /stub/whoami) to both brokers at once; "
        f"{args.concurrency // len(brokers)} users at a time ({args.concurrency} requests in flight), "
        f"closed loop, Python aiohttp client. Latency is the whole first request: claim (one Lua call, the "
        f"pod's record, the outputs call to the pod) plus the proxied answer.",
        f"claims/s = {claims_found} claims found in Redis / {wall:.2f} s from the first request sent to the last answer.",
        f"Redis: {redis_detail}. Answers: {answers_detail}.",
        f"Pods: {len(pod_rss)} bench/tiny_pod.py processes (`python -S`, probe a1111), RSS median "
        f"{pod_rss[len(pod_rss) // 2] / 2**20:.1f} MiB; all Ready {warm_seconds:.0f} s after the first broker started."
        if pod_rss
        else "Pods: none found.",
    ]
    per_broker = []
    for b, cpu in zip(brokers, idle_cpu, strict=True):
        mine = sorted(a["latency"] for a in answers if a["broker"] == b.port)
        role = (
            "controller leader"
            if b.port == leader
            else ("follower" if leader else "leader unknown")
        )
        per_broker.append(f"broker :{b.port} ({role}; {cpu:.0%} of a core while idle before the burst): "
                          f"p50 {fmt_ms(percentile(mine, 50))}, p99 {fmt_ms(percentile(mine, 99))}")  # fmt: skip
    report.notes.append(
        "Per broker: "
        + "; ".join(per_broker)
        + "."
        + ("" if leader else " (Which broker leads the controller did not show in its idle CPU.)")
    )
    if memory_note:
        report.notes.append(memory_note)
    if statuses:
        report.notes.append(
            "Failed requests: " + ", ".join(f"{k}: {v}" for k, v in statuses.items())
        )
    return report


def main(argv: list[str] | None = None) -> None:
    print(run(argv).markdown())


if __name__ == "__main__":
    main()
