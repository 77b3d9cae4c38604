"""`make demo`'s promises: embedded Redis, a warm fleet, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from tests.support.procs import wait_for, write_fleet


def test_embedded_redis_and_ctrl_c_stops_everything(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs", buffer=2)
    broker = brokers(fleet=fleet, redis=None, SDB_AUTH="dev")  # no SDB_REDIS_URL: embedded
    wait_for(lambda: len(broker.pod_records()) >= 2, 20, what="warm pods")
    assert (broker.data_dir / "redis" / "redis.sock").exists()
    children = psutil.Process(broker.proc.pid).children(recursive=True)
    pod_pids = [int(r["pid"]) for r in broker.pod_records()]
    redis_pids = [c.pid for c in children if "redis-server" in " ".join(c.cmdline())]
    assert redis_pids, "no embedded redis-server found"

    broker.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert broker.proc.wait(20) == 0
    for pid in pod_pids + redis_pids:
        wait_for(lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10,
                 what=f"process {pid} to stop")  # fmt: skip
    assert broker.pod_records() == []
    assert (broker.data_dir / "redis" / "appendonly.aof").exists()  # persistence on
