"""A quiet, honest start: what `make demo` and `sdbroker fleet status` print on a clean machine.

No Python warning, no WARNING log line for what is normal (a first start finds
no pods to adopt), "serving on" once however many workers, no APScheduler
chatter, and one INFO line per claim, as each reclaim has.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import REPO, wait_for, write_fleet
from tests.test_workers import whoami

PYTHON_WARNING = re.compile(r"\b\w*Warning: ")  # warnings.showwarning's "file:line: Category: text"


def log_problems(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if PYTHON_WARNING.search(line) or " WARNING " in line or " ERROR " in line
        or "Traceback" in line
    ]  # fmt: skip


def test_a_first_start_with_two_workers_is_quiet(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    broker = brokers(
        fleet=fleet,
        redis=None,  # embedded, as make demo
        SDB_WORKERS="2",
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        # APScheduler runs these jobs often here: each run must stay silent.
        SDB_REAP_INTERVAL="1s",
        SDB_ACTIVITY_FLUSH="1s",
    )
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    pod = wait_for(lambda: whoami(broker.url, "alice"), 20, what="alice's WebUI")["pod"]
    wait_for(lambda: "claimed pod" in broker.log_text(), 10, what="the claim's log line")
    time.sleep(2.5)  # the reaper's and the flusher's jobs run a few times meanwhile
    assert whoami(broker.url, "alice")["pod"] == pod  # an existing claim logs nothing more

    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(30) == 0
    text = broker.log.read_text()
    assert log_problems(text) == []
    assert len(re.findall(r"^sdbroker: serving on http://", text, re.MULTILINE)) == 1, text
    assert "2 workers" in text
    assert "apscheduler" not in text, text
    claims = [line for line in text.splitlines() if "claimed pod" in line]
    assert len(claims) == 1, claims
    # "waited": 0.0 from a warm pod; more if alice came before the first pod was Ready.
    assert re.search(
        rf"claimed pod {pod} for alice \(profile default, waited \d+\.\ds in line", claims[0]
    )
    assert " INFO " in claims[0]


def test_a_single_process_says_serving_once_it_listens(brokers, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)
    broker = brokers(fleet=fleet, redis=None, SDB_AUTH="dev")
    text = broker.log_text()
    assert text.count("sdbroker: serving on http://") == 1, text
    assert "(dev login)" in text
    assert log_problems(text) == []


def test_fleet_status_prints_no_python_warning(redis_url: str, tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "status"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet),
             "SDB_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "default" in done.stdout
    assert done.stderr == ""
