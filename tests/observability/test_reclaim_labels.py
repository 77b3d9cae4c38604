"""sdbroker_reclaims_total carries the profile of the session that ended, on the
controller's path too: a claimed WebUI killed under its user is ended by the leading
controller ("dead"), with no reaper in the broker, and counted under its own profile."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.admin.support import Person, eventually, fleet_file
from tests.observability.test_fleet_counts import samples


async def test_a_dead_pods_reclaim_is_counted_under_its_profile(brokers, tmp_path: Path) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"name": "l4", "max": 2})
    # SDB_REAP_INTERVAL=0: no in-broker reaper, so only the controller can end the session.
    broker = brokers(
        fleet=fleet, SDB_AUTH="dev", SDB_REAP_INTERVAL="0", SDB_METRICS_CIDRS="127.0.0.1/32"
    )
    ann = Person(broker.url)
    dead = ("sdbroker_reclaims_total", (("profile", "l4"), ("reason", "dead")))
    try:
        await ann.login("ann")
        pod = (await eventually(ann.whoami, what="ann's WebUI"))["pod"]
        before = samples(broker.url)
        assert before[dead] == 0  # there from the first scrape, at 0, with its profile
        pid = next(int(r["pid"]) for r in broker.pod_records() if r["id"] == pod)
        os.killpg(os.getpgid(pid), signal.SIGKILL)

        async def counted() -> bool:
            return samples(broker.url).get(dead) == 1

        await eventually(counted, timeout=30, what="the dead pod's reclaim counted")
        assert not [k for k, v in samples(broker.url).items()
                    if k[0] == "sdbroker_reclaims_total" and v and k != dead]  # fmt: skip
    finally:
        await ann.close()
