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
from dataclasses import replace
from pathlib import Path

import pytest

from bench import bound_wait, claims, download, proxy, run_all, websockets  # noqa: F401 - they import
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
def test_benches_without_outside_tools_run_end_to_end(tmp_path) -> None:
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


# -- bench/sim: the GPU economy model and its real-code cross-check (issue 19) --------------------

from bench import sim_des, sim_real  # noqa: E402
from bench.sim_workload import Visit, Workload, morning  # noqa: E402


def _alone(*visits: Visit, gpus: int = 4, span: float = 4 * 3600) -> Workload:
    return Workload("t", "", sorted(visits, key=lambda v: v.arrive), gpus, span)


def _run(policy: sim_des.Policy, work: Workload, tab: bool = False) -> sim_des.Result:
    return sim_des.Model(policy, work, buffer=1, seed=3, tab_activity=tab).run()


def test_an_open_tab_is_activity_for_every_policy_or_for_none() -> None:
    """The published p50 of 3,922 s came from counting the open tab for that policy only:
    the assumption is a switch that moves every policy's figures together."""
    work = _alone(Visit("ann", 600, active=60, tab=3600))
    for policy in (sim_des.PUBLISHED, sim_des.SDBROKER):
        quiet, counted = _run(policy, work), _run(policy, work, tab=True)
        assert quiet.claimed_idle_s < 1200 + 300  # idle timeout, plus the cron's granularity
        assert counted.claimed_idle_s >= 3600 + 900  # the open tab, then the idle timeout


def test_a_generation_is_reclaimed_by_the_seeds_cron_but_never_by_sdbroker() -> None:
    """A batch started as the tab closes: the seed's cruiser has no busy check
    (cloud-function/main.py), sdbroker's reaper asks the WebUI; both are counted."""
    work = _alone(Visit("ann", 600, active=60, batch=3600, tab=0))
    assert _run(sim_des.PUBLISHED, work).mid_generation == 1
    for policy in (sim_des.SDBROKER, sim_des.PRESENCE):
        r = _run(policy, work)
        assert r.mid_generation == 0 and r.reclaims == 1
        assert r.in_use_s == pytest.approx(3660)


def test_the_published_policy_has_no_queue_and_scales_on_its_sync() -> None:
    """ "Too many users" and a reload: waits are whole reloads; sdbroker starts a pod per waiter
    at once, so nobody waits longer than one pod start."""
    work = _alone(*(Visit(f"u{i}", 600 + i, active=600) for i in range(12)), gpus=20)
    published, ours = _run(sim_des.PUBLISHED, work), _run(sim_des.SDBROKER, work)
    assert published.waits and all(w % sim_des.PUBLISHED.reload == 0 for w in published.waits)
    assert max(published.waits) > 120 * 2  # the Buffer policy adds pods only as they are allocated
    assert max(ours.waits) <= sim_des.START[1]


def test_presence_model_keeps_the_pod_of_someone_back_before_it_ends() -> None:
    back_soon = Visit("ann", 600, active=60, tab=0, back_after=60, back=Visit("ann", 0, active=60))
    back_late = Visit("bob", 600, active=60, tab=0, back_after=600, back=Visit("bob", 0, active=60))
    r = _run(sim_des.PRESENCE, _alone(back_soon, back_late))
    assert r.kept == 1 and len(r.rewaits) == 1


def test_presence_model_waits_for_the_generation_and_sees_only_whom_it_can() -> None:
    """As the reaper does: a batch running after the tab closed keeps the pod, and the count
    starts at its end; a person whose tab the broker cannot see keeps the idle timeout."""
    seen = sim_des.Model(sim_des.PRESENCE, _alone(Visit("ann", 600, active=60, batch=600)),
                         buffer=0, seed=3, tab_activity=False)  # fmt: skip
    seen.run()
    [pod] = [p for p in seen.pods if p.person == "ann"]
    assert pod.ended is not None and pod.ended >= 600 + 60 + 600 + 120  # batch end + 2 min
    assert pod.ended < 600 + 60 + 900  # and before the idle timeout would have
    unseen = sim_des.Model(replace(sim_des.PRESENCE, seen=0.0),
                           _alone(Visit("bob", 600, active=60)),
                           buffer=0, seed=3, tab_activity=False)  # fmt: skip
    unseen.run()
    [pod] = [p for p in unseen.pods if p.person == "bob"]
    assert pod.ended is not None and pod.ended >= 600 + 60 + 900


def test_every_gpu_second_is_counted_once_and_the_oracle_bounds_the_policies() -> None:
    work = Workload("t", "", morning(60, 3 * 3600, seed=5), 10, 3 * 3600)
    best = _run(sim_des.ORACLE, work)
    assert best.idle_s == 0
    for policy in (sim_des.PUBLISHED, sim_des.SDBROKER, sim_des.PRESENCE):
        model = sim_des.Model(policy, work, buffer=2, seed=3, tab_activity=False)
        r = model.run()
        lifetimes = sum((p.ended or work.span) - p.created for p in model.pods)
        assert r.warming_s + r.warm_s + r.claimed_idle_s + r.in_use_s == pytest.approx(lifetimes)
        assert r.idle_s > best.idle_s and sum(r.waits) >= sum(best.waits)


def test_a_run_is_invalid_when_the_loop_lags_past_one_percent_of_its_shortest_interval() -> None:
    run = sim_real.RealResult(shortest=2.0, lags=[0.001] * 199 + [5.0])  # one GC pause
    assert run.valid and "VALID" in run.rules()[2] and "INVALID" not in run.rules()[2]
    run.lags = [0.05] * 100  # 50 ms sim: more than 1% of 2 s
    assert not run.valid and "INVALID" in run.rules()[2]


def test_the_controllers_real_time_constants_are_scaled_for_a_run_and_put_back() -> None:
    """A renamed or moved constant would run on real time under a x400 clock: fail here."""
    from fleet import controller

    before = {name: getattr(controller, name) for name in sim_real.SCALED_CONSTANTS}
    with sim_real.scaled_controller(100):
        for name, value in before.items():
            assert getattr(controller, name) == pytest.approx(value / 100)
    assert {name: getattr(controller, name) for name in sim_real.SCALED_CONSTANTS} == before


def test_the_real_reaper_lets_a_generation_finish(tmp_path) -> None:
    """Through the real ReapCycle and its busy probe: the idle one is reclaimed, the one whose
    batch still runs is not, and no reclaim lands mid-generation."""
    plan = [Visit("gen", 0, active=30, batch=1500), Visit("idle", 0, active=30)]
    [(_, r)] = sim_real.run_all([sim_real.SDBROKER_REAL], plan, gpus=2, buffer=0, span=1300,
                                scale=150, seed=1)  # fmt: skip
    assert len(r.waits) == 2
    assert r.reclaimed == 1 and r.mid_generation == 0


def test_the_sim_prints_every_policy_workload_and_rule() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.sim", "--no-real", "--users", "60", "--gpus", "10",
         "--span", "7200"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for needle in ("rules of a valid run", "MAIN", "SENSITIVITY", "LOGIN SPIKE", "ALL-DAY TAB",
                   "oracle", "published (seed", "sdbroker (events",
                   "reclaim_when_gone 2m, every tab seen", "half the tabs seen"):  # fmt: skip
        assert needle in out, needle


def test_ab_reads_every_latency_row_of_a_report() -> None:
    """bench/ab.py compares p50/p99 rows; a table without them, and cells that are
    no latency, are skipped, and seconds are read as seconds."""
    from bench.ab import latencies

    report = """## Claim burst

| users | claims/s |
|-------|----------|
| 500   | 393      |

| latency | timed by | count | p50 | p99 | max |
|---------|----------|-------|-----|-----|-----|
| claim, broker side | histogram | 500 | 12.6 ms | 37.5 ms (met) | <= 40.0 ms |
| first request | client | 1000 | 30.8 ms | 1.25 s | 81.3 ms |
| nothing yet | client | 0 | - | - | - |
"""
    assert latencies(report) == {
        "claim, broker side": (12.6, 37.5),
        "first request": (30.8, 1250.0),
    }
