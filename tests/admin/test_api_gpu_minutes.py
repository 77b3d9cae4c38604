"""`GET /users?min_gpu_minutes=N`: GPU-minutes are the session ends the audit stream
holds (session_seconds times the profile's GPUs per pod) plus the session now, the
filter applies before the page is cut (full pages, every person once), and a bad
number is a 400 naming the parameter."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import redis

from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file
from tests.admin.test_api_users import ALL, _pages


def _ended(client: redis.Redis, user: str, profile: str, seconds: int, **extra: str) -> None:
    """An audit entry as _tell.lua writes one when a session ends."""
    fields = {"user": user, "pod": f"{profile}-x", "profile": profile, "reason": "idle",
              "session_seconds": str(seconds), "at": str(time.time()), "by": "reaper"}  # fmt: skip
    client.xadd(keys.AUDIT, {**fields, **extra})


async def test_users_filtered_by_gpu_minutes(brokers, tmp_path: Path, redis_url: str) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2})
    # Two GPU slots: one pod of this profile holds one GPU (a local profile without
    # `gpus` holds none, and its minutes count nothing).
    fleet.write_text(fleet.read_text().replace("    local:\n", "    local:\n      gpus: [0, 1]\n"))
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root = Person(broker.url)
    bare = aiohttp.ClientSession()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    now = time.time()
    client.zadd(keys.ACTIVITY, {u: now - 600 for u in ("dave", "erin", "frank", "gina")})
    _ended(client, "dave", "default", 1800)
    _ended(client, "dave", "default", 1200)  # dave: 50 minutes in two sessions
    _ended(client, "erin", "default", 600)  # erin: 10
    _ended(client, "frank", "removed", 2700)  # a profile the file lost: one GPU, 45
    client.xadd(keys.AUDIT, {"action": "reclaim", "user": "gina", "session_seconds": "9000"})
    try:
        await root.login("root")
        api = Api(bare, broker.url, (await root.admin_token("ops", scopes=ALL))[0])

        async def warm() -> bool:
            return (await api.call("GET", "/fleet"))[1][0]["ready"] >= 1

        await eventually(warm, what="a warm pod")
        status, done = await api.call("POST", "/users/carol/session", {})
        assert status == 201, done
        # carol's session began 20 minutes ago (her pod's record says so).
        (pod,) = [u["session"]["pod"] for u in (await api.call("GET", "/users"))[1]["users"]
                  if u["session"]]  # fmt: skip
        client.hset(keys.pod(pod), "claimed_at", repr(now - 1200))

        assert sum(await _pages(api, "min_gpu_minutes=40"), []) == ["dave", "frank"]
        assert await _pages(api, "min_gpu_minutes=40&limit=1") == [["dave"], ["frank"]]
        assert sum(await _pages(api, "min_gpu_minutes=10"), []) == [
            "carol", "dave", "erin", "frank"]  # fmt: skip
        assert sum(await _pages(api, "min_gpu_minutes=15&session=true"), []) == ["carol"]
        # A "reclaim" action is not a session end: gina used nothing.
        everyone = sum(await _pages(api, "min_gpu_minutes=0"), [])
        assert everyone == ["carol", "dave", "erin", "frank", "gina"]
        assert "gina" not in sum(await _pages(api, "min_gpu_minutes=0.5"), [])
        # Each person shows the figure the filter compares.
        shown = {u["user"]: u["gpu_minutes"] for u in (await api.call("GET", "/users"))[1]["users"]}
        assert shown["dave"] == 50.0 and shown["erin"] == 10.0 and shown["frank"] == 45.0
        assert shown["gina"] == 0.0 and 19.0 < shown["carol"] < 25.0
        for bad in ("-1", "x", "nan", "inf", ""):
            status, body = await api.call("GET", f"/users?min_gpu_minutes={bad}")
            assert status == 400 and "min_gpu_minutes" in body["detail"], (bad, body)
        _, document = await api.call("GET", "/openapi.json")
        (path,) = [p for p in document["paths"] if p.endswith("/users")]
        params = document["paths"][path]["get"]["parameters"]
        assert "min_gpu_minutes" in {p["name"] for p in params}
    finally:
        client.close()
        await root.close()
        await bare.close()
