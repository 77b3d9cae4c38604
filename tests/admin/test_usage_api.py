"""GET /api/v1/usage (issue 19 §3): GPU-minutes per user and per group, through a real
broker in header mode (the trusted proxy names each person's groups), its stub WebUIs on
GPU slots, and a real Redis. The groups reach the fleet with the claim: before, it never
knew them, so usage per group could not exist."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.admin.support import Api, Person, eventually, fleet_file

HEADER_ENV = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_ADMIN_USERS": "root",
}
ANN = {"X-Forwarded-Groups": "staff, artists"}
BOB = {"X-Forwarded-Groups": "staff"}


async def test_usage_by_user_and_by_group(brokers, tmp_path: Path) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 3})
    text = fleet.read_text().replace("    local:\n", "    local:\n      gpus: [0, 1, 2]\n")
    fleet.write_text(text)  # one GPU slot per pod: a GPU-minute is a pod-minute
    broker = brokers(fleet=fleet, **HEADER_ENV)
    ann, bob = Person(broker.url, header_user="ann"), Person(broker.url, header_user="bob")
    root = Person(broker.url, header_user="root")
    try:
        token, _ = await root.admin_token("usage", scopes=("read", "sessions"))
        api = Api(root.http, broker.url, token)
        for person, groups in ((ann, ANN), (bob, BOB)):

            async def served(person: Person = person, groups: dict = groups) -> bool:
                async with person.http.get(broker.url + "/stub/whoami", headers=groups) as resp:
                    return resp.status == 200

            await eventually(served, 30, "a WebUI")
        await asyncio.sleep(1.5)  # the audit counts whole seconds: ann's session lasts some
        status, done = await api.call("POST", "/sessions/ann/reclaim")
        assert status == 200, done

        status, report = await api.call("GET", "/usage?by=group&since=1h")
        assert status == 200, report
        rows = {r["key"]: r for r in report["rows"]}
        assert set(rows) == {"staff", "artists"}
        assert (rows["staff"]["sessions"], rows["staff"]["running"]) == (2, 1)
        assert (rows["artists"]["sessions"], rows["artists"]["running"]) == (1, 0)
        assert rows["staff"]["gpu_minutes"] > 0, report
        assert set(rows["staff"]["by_profile"]) == {"default"}
        assert report["until"] - report["since"] == 3600

        status, report = await api.call("GET", "/usage")  # by user, the last 24 hours
        assert status == 200
        assert {r["key"]: r["running"] for r in report["rows"]} == {"ann": 0, "bob": 1}

        # An admin's bad input: a 400 that says what is accepted, never a traceback.
        for query, says in (("by=team", "by must be user or group"),
                            ("since=yesterday", "since must be unix seconds or a duration"),
                            ("since=10&until=5", "since must not be after until")):  # fmt: skip
            status, problem = await api.call("GET", f"/usage?{query}")
            assert status == 400 and says in problem["detail"], (query, problem)
        status, doc = await api.call("GET", "/openapi.json")
        assert "UsageReport" in doc["components"]["schemas"]
    finally:
        for person in (ann, bob, root):
            await person.close()
