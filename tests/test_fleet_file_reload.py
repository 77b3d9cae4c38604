"""The running broker reloads its fleet file: a valid edit resizes the fleet, a broken one is refused."""

from __future__ import annotations

from pathlib import Path

import redis

from fleet import keys
from tests.support.procs import wait_for, write_fleet


def test_edited_fleet_file_is_applied_and_a_broken_edit_refused(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=4)
    broker = brokers(
        fleet=fleet, SDB_FLEET_RELOAD="0.5s", SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32"
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_for(lambda: client.zcard(keys.ready("default")) == 1, 20, what="one warm pod")
        write_fleet(fleet, outputs=tmp_path / "out", buffer=3, max=4)
        wait_for(
            lambda: client.zcard(keys.ready("default")) == 3,
            30,
            what="three warm pods after the edit",
        )

        fleet.write_text(fleet.read_text().replace("max: 4", "max: -1"))
        wait_for(
            lambda: "changed but is invalid" in broker.log_text(), 20, what="the refusal in the log"
        )
        assert f"{fleet}:" in broker.log_text() and "profiles[0].max:" in broker.log_text()
        assert client.zcard(keys.ready("default")) == 3  # the running fleet is untouched
        assert "max: -1" not in (client.get(keys.SPEC) or "")
    finally:
        client.close()
