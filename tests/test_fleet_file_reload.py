"""The fleet file's one story (README, docs/operations.md): a running broker applies a
changed file within SDB_FLEET_RELOAD, once for all brokers; a broken edit is refused; the
last change wins (a file or `fleet apply`) and a restart changes nothing; a new spec
drops only the "For now" sizes it replaces, and says so."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from fleet import connect_redis, keys, parse_spec
from fleet.specstore import adopt, read, sha, store
from tests.admin.support import fleet_file
from tests.support.procs import wait_for, write_fleet

HEADER_AUTH = {"SDB_AUTH": "header", "SDB_TRUSTED_PROXIES": "127.0.0.1/32"}


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


def _sizes_override(client: redis.Redis, by: str = "root") -> None:
    """An admin's "For now" sizes, as the console stores them (fleet.autoscale)."""
    fields = {"buffer": "2", "min": "", "max": "", "at": repr(time.time()), "by": by}
    client.hset(keys.override("default"), mapping=fields)


def test_a_changed_file_is_applied_once_and_drops_only_the_overrides_it_resizes(
    brokers, redis_url: str, tmp_path: Path
) -> None:
    """Two brokers see each edit; it is stored once (a second store dropped overrides set in
    between). An edit of other fields keeps an admin's "For now"; one of the sizes drops it,
    and says so in the log and on the console's audit list."""
    outputs = tmp_path / "out"
    fleet = fleet_file(tmp_path / "fleet.yaml", outputs, {"buffer": 1, "max": 4})
    env = {"SDB_FLEET_RELOAD": "0.3s", **HEADER_AUTH}
    first = brokers(fleet=fleet, **env)
    second = brokers(fleet=fleet, data_dir=tmp_path / "data2", **env)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        _sizes_override(client)
        fleet_file(fleet, outputs, {"buffer": 1, "max": 4, "display": "Renamed"})
        wait_for(lambda: "Renamed" in (client.get(keys.SPEC) or ""), 20, what="the rename")
        time.sleep(1.0)  # both brokers have looked at the file again
        assert client.hget(keys.override("default"), "by") == "root", "a rename dropped it"

        fleet_file(fleet, outputs, {"buffer": 1, "max": 3, "display": "Renamed"})
        wait_for(lambda: "max: 3" in (client.get(keys.SPEC) or ""), 20, what="the new max")
        time.sleep(1.0)
        assert not client.exists(keys.override("default"))
        logs = first.log_text() + second.log_text()
        assert logs.count(f"{fleet} changed: applied") == 2, logs  # one per edit, not per broker
        assert "dropped the For now sizes of profile default (buffer 2, set by root)" in logs
        dropped = [f for _, f in client.xrange(keys.AUDIT) if f["reason"] == "override_dropped"]
        assert [(d["profile"], d["by"]) for d in dropped] == [("default", "root")]
        assert "the fleet file changed" in dropped[0]["detail"]
    finally:
        client.close()


async def test_the_last_change_wins_and_a_restart_changes_nothing(redis_url: str) -> None:
    """A starting broker runs an apply made since its file; a file the fleet has not run
    yet (a new ConfigMap with the restart) is applied."""
    redis_ = connect_redis(redis_url)
    try:
        first = parse_spec(FILE.format(max=4), "fleet.yaml")
        assert (await adopt(redis_, first)).source_text == first.source_text  # stored
        applied = parse_spec(FILE.format(max=5), "applied.yaml")
        await store(redis_, applied, source="apply", by="root")
        # A restart with the same file: the apply stays.
        assert (await adopt(redis_, first)).source_text == applied.source_text
        # A restart with a new file: the new file runs, for every broker.
        new = parse_spec(FILE.format(max=6), "fleet.yaml")
        assert (await adopt(redis_, new)).source_text == new.source_text
        stored = await read(redis_)
        assert stored is not None and (stored.source, stored.sha) == ("file", sha(new.source_text))
        # ...and a broker still on the older file, restarting, does not bring it back
        # over an apply made since the new one.
        await store(redis_, applied, source="apply", by="root")
        assert (await adopt(redis_, new)).source_text == applied.source_text
    finally:
        await redis_.aclose()


FILE = """\
backend: local
outputs: /tmp/sdb-outputs
profiles:
  - name: default
    max: {max}
    local:
      command: [python, -m, http.server, "{{port}}"]
"""
