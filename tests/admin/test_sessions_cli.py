"""`sdbroker sessions list|end USER` and `sdbroker user outputs USER`, run as an admin runs
them (a subprocess with a broker's settings) against a real broker and Redis: the list is
the sessions the broker made, ending one is the console's Reclaim (the user's next page
says an administrator ended it), and the printed outputs folder is the one the broker
made for that user. Every failure is one line and an exit code, never a traceback."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
from pathlib import Path

import redis

from fleet import keys, slugify
from tests.admin.support import Person, eventually, fleet_file
from tests.admin.test_specs import cli
from tests.support.procs import free_port


async def acli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the broker's clients in this test's event loop keep running."""
    return await asyncio.to_thread(cli, *args, env=env)


def _clean(run: subprocess.CompletedProcess[str], code: int) -> str:
    """The run ended with `code` and said why in one line on stderr, without a traceback."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


async def test_list_end_and_outputs_against_a_running_broker(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    outputs = tmp_path / "outputs"
    fleet = fleet_file(tmp_path / "fleet.yaml", outputs, {"buffer": 1, "max": 2})
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    env = {"SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet), "SDB_DATA_DIR": str(tmp_path)}
    carol = Person(broker.url)
    try:
        assert (await acli("sessions", "list", env=env)).stdout.strip() == "no sessions"
        await carol.login("Carol.Lee@example.com")
        who = await eventually(carol.whoami, what="carol's WebUI")

        listed = await acli("sessions", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        head, row = listed.stdout.splitlines()
        assert head.split() == ["USER", "PROFILE", "POD", "SINCE", "(UTC)", "AGE", "IDLE"]
        assert row.split()[:3] == ["Carol.Lee@example.com", "default", who["pod"]]
        as_json = await acli("sessions", "list", "--json", env=env)
        (session,) = json.loads(as_json.stdout)
        assert (session["user"], session["pod"], session["profile"]) == (
            "Carol.Lee@example.com", who["pod"], "default")  # fmt: skip
        assert session["since"] > 0 and session["idle_seconds"] is not None

        # The folder printed is the very one the broker made for her at her claim.
        shown = await acli("user", "outputs", "Carol.Lee@example.com", env=env)
        assert shown.returncode == 0, shown.stderr
        folder = Path(shown.stdout.strip())
        assert folder == outputs.resolve() / slugify("Carol.Lee@example.com")
        assert await asyncio.to_thread(folder.is_dir)
        assert folder.name.startswith("carol-lee-example-com-")

        ended = await acli(
            "sessions", "end", "Carol.Lee@example.com", "--reason", "GPU\nneeded", env=env
        )
        assert ended.returncode == 0, ended.stderr
        assert who["pod"] in ended.stdout
        status, _, page = await carol.page("/")
        assert "An administrator ended your session" in page, (status, page)
        assert (await acli("sessions", "list", env=env)).stdout.strip() == "no sessions"
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        entries = [e for _, e in client.xrange(keys.AUDIT)]
        client.close()
        by = f"cli:{getpass.getuser()}"
        end = {"user": "Carol.Lee@example.com", "reason": "admin", "by": by, "detail": "GPU needed"}
        assert end.items() <= next(e for e in entries if e.get("reason")).items()
        assert any(e.get("action") == "reclaim" and e.get("by") == by for e in entries)

        again = await acli("sessions", "end", "Carol.Lee@example.com", env=env)
        assert _clean(again, 1) == "Carol.Lee@example.com has no session"
        assert again.stdout == ""
    finally:
        await carol.close()


KUBE_FLEET = """\
backend: kubernetes
profiles:
  - name: l4
    max: 2
    kubernetes:
      image: example/webui:1
  - name: a100
    max: 1
    kubernetes:
      image: example/webui:1
      volumes: {outputs: {claim: big-outputs, path: /data/out}}
  - name: scratch
    max: 1
    kubernetes:
      image: example/webui:1
      volumes: {outputs: null}
"""


def test_outputs_on_kubernetes_name_each_volume(tmp_path: Path) -> None:
    """On Kubernetes the folder is on a PersistentVolumeClaim: each profile's claim and
    mount path, and a profile without an outputs volume says so. No Redis needed."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(KUBE_FLEET)
    shown = cli("user", "outputs", "Ann.Lee@example.com", env={"SDB_FLEET": str(fleet)})
    assert shown.returncode == 0, shown.stderr
    slug = slugify("Ann.Lee@example.com")
    assert shown.stdout.splitlines() == [
        f"l4: /outputs/{slug} (folder {slug}/ at the root of PersistentVolumeClaim sd-outputs)",
        f"a100: /data/out/{slug} (folder {slug}/ at the root of PersistentVolumeClaim big-outputs)",
        "scratch: none: this profile mounts no outputs volume",
    ]


def test_a_user_name_cannot_drive_the_admins_terminal(tmp_path: Path, redis_url: str) -> None:
    """A name from an identity provider may hold escape sequences (ESC, the 8-bit CSI):
    the table shows them escaped; --json is JSON (escaped by json itself)."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs")
    env = {"SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet)}
    evil = "mallory\x1b]0;owned\x07\x9b2J"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.zadd(keys.claimed("default"), {"default-evil": 1.0})
    client.hset(keys.pod("default-evil"), mapping={
        "id": "default-evil", "profile": "default", "state": "claimed", "user": evil,
        "claimed_at": "1000", "created": "900"})  # fmt: skip
    client.close()
    listed = cli("sessions", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert not any(c in listed.stdout for c in "\x1b\x07\x9b")
    assert "mallory\\x1b]0;owned\\x07\\x9b2J" in listed.stdout
    assert json.loads(cli("sessions", "list", "--json", env=env).stdout)[0]["user"] == evil
    gone = cli("sessions", "end", "x\x1b[2J", env=env)
    assert _clean(gone, 1) == "x\\x1b[2J has no session"


def test_bad_settings_and_redis_down_are_one_line(tmp_path: Path) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs")
    ok = {"SDB_FLEET": str(fleet), "SDB_DATA_DIR": str(tmp_path)}
    down = {**ok, "SDB_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    for args in (("sessions", "list"), ("sessions", "end", "carol")):
        assert _clean(cli(*args, env=down), 1).startswith("cannot reach Redis: ")
        bad = cli(*args, env={**ok, "SDB_REDIS_URL": "http://nope"})
        assert _clean(bad, 2).startswith("SDB_REDIS_URL: ")
        assert "SDB_REDIS_URLL" in _clean(cli(*args, env={**down, "SDB_REDIS_URLL": "x"}), 2)
        # No SDB_REDIS_URL and no embedded Redis running under SDB_DATA_DIR.
        assert "SDB_REDIS_URL is not set" in _clean(cli(*args, env=ok), 2)
    broken = tmp_path / "broken.yaml"
    broken.write_text(fleet.read_text().replace("max: 2", "max: lots"))
    line = _clean(cli("user", "outputs", "carol", env={**ok, "SDB_FLEET": str(broken)}), 2)
    assert line.startswith(f"{broken}:") and "max" in line
    missing = cli("user", "outputs", "carol", env={**ok, "SDB_FLEET": str(tmp_path / "no.yaml")})
    assert str(tmp_path / "no.yaml") in _clean(missing, 2)
