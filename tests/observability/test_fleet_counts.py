"""A CronJob reaper (`python -m reaper --once`, no metrics of its own) ends a session: the
broker's /_broker/metrics shows that end and the reaper's heartbeat, from Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import REPO, wait_for, write_fleet


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/_broker/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def whoami(url: str) -> int:
    req = urllib.request.Request(url + "/stub/whoami", headers={"X-Forwarded-User": "ann"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_cronjob_reapers_reclaim_reaches_the_metrics(brokers, redis_url, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs", buffer=1,
                        max=2, idle_timeout="2s")  # fmt: skip
    broker = brokers(
        fleet=fleet,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_METRICS_CIDRS="127.0.0.1/32",
        SDB_REAP_INTERVAL="0",  # reaping is the CronJob's alone
        SDB_ACTIVITY_FLUSH="0.2s",
    )
    idle = ("sdbroker_sessions_ended_total", (("profile", "default"), ("reason", "idle")))
    before = samples(broker.url)
    assert before[idle] == 0  # every profile and reason from the first scrape
    assert not [k for k in before if k[0] == "sdbroker_heartbeat_timestamp_seconds"
                and ("component", "reaper") in k[1]]  # fmt: skip
    wait_for(lambda: whoami(broker.url) == 200, 30, what="ann's WebUI")
    env = {**os.environ, "SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet),
           "SDB_DATA_DIR": str(tmp_path / "data")}  # fmt: skip

    def cronjob_reclaimed() -> bool:
        run = subprocess.run([sys.executable, "-m", "reaper", "--once"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return '"reclaimed":1' in run.stdout

    wait_for(cronjob_reclaimed, 30, interval=0.5, what="the CronJob's reclaim")
    after = samples(broker.url)
    assert after[idle] == 1
    beat = after[("sdbroker_heartbeat_timestamp_seconds", (("component", "reaper"),))]
    assert beat > 0
    # The broker's own counter saw nothing: the reclaim was not its.
    assert after[("sdbroker_reclaims_total", (("profile", "default"), ("reason", "idle")))] == 0
