"""SDB_WORKERS: several broker processes on one port, one embedded Redis, one clean exit."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import psutil

from tests.support.procs import wait_for, write_fleet


def whoami(base: str, user: str) -> dict | None:
    req = urllib.request.Request(base + "/stub/whoami", headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def proxied_ok(base: str) -> float:
    with urllib.request.urlopen(base + "/_broker/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('sdbroker_proxy_requests_total{code="200"}')
    )


def test_workers_share_the_port_and_stop_everything(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=2, max=4)
    broker = brokers(
        fleet=fleet,
        redis=None,
        SDB_WORKERS="2",
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_METRICS_CIDRS="127.0.0.1/32",
    )
    supervisor = psutil.Process(broker.proc.pid)
    workers = [c for c in supervisor.children() if "broker" in " ".join(c.cmdline())]
    assert len(workers) == 2
    listening = {
        p.pid
        for p in workers
        if any(c.laddr.port == broker.port for c in p.net_connections(kind="tcp"))
    }
    wait_for(lambda: len(listening | {
        p.pid for p in workers if any(c.laddr.port == broker.port for c in p.net_connections(kind="tcp"))
    }) == 2, 20, what="both workers listening")  # fmt: skip
    pods = {
        u: wait_for(lambda u=u: whoami(broker.url, u), 20, what=u)["pod"]
        for u in ("ann", "bob", "cat")
    }
    assert len(set(pods.values())) == 3
    for _ in range(10):  # whichever worker answers, everyone stays on their own pod
        assert {u: whoami(broker.url, u)["pod"] for u in pods} == pods

    # Whichever worker a scrape lands on, it counts every worker's requests.
    answered = {proxied_ok(broker.url) for _ in range(8)}
    assert len(answered) == 1 and answered.pop() >= 33, answered

    pod_pids = [int(r["pid"]) for r in broker.pod_records()]
    everything = [p.pid for p in supervisor.children(recursive=True)] + pod_pids
    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(30) == 0
    for pid in everything:
        wait_for(lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10,
                 what=f"process {pid} to stop")  # fmt: skip
    assert broker.pod_records() == []


def test_workers_stop_when_their_supervisor_is_killed(brokers, tmp_path: Path) -> None:
    """A SIGKILLed supervisor leaves no worker behind serving the port unsupervised
    (before: both workers lived on as orphans, parent pid 1)."""
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)
    broker = brokers(fleet=fleet, redis=None, SDB_WORKERS="2", SDB_DRAIN_TIMEOUT="1")
    supervisor = psutil.Process(broker.proc.pid)
    workers = [c for c in supervisor.children() if "--worker" in c.cmdline()]
    assert len(workers) == 2
    supervisor.kill()  # the supervisor alone, not its process group
    broker.proc.wait(10)

    def gone(p: psutil.Process) -> bool:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE

    wait_for(lambda: all(gone(w) for w in workers), 20, what="the workers to stop")
