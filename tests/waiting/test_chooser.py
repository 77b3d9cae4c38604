"""Several profiles: a first visit shows the chooser, the choice is remembered per user."""

from __future__ import annotations

from pathlib import Path

import redis

from fleet import keys
from tests.admin.support import Api, Person, eventually, field, fleet_file

PROFILES = (
    {"name": "t4", "display": "Small GPU", "gpu": "NVIDIA T4", "buffer": 1, "max": 2},
    {"name": "l4", "display": "Big GPU", "gpu": "NVIDIA L4", "buffer": 1, "max": 2},
)


async def test_chooser_shows_profiles_and_remembers_the_choice(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", *PROFILES)
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root, alice, again = Person(broker.url), Person(broker.url), Person(broker.url)
    try:
        await root.login("root")
        token, _ = await root.admin_token()
        api = Api(root.http, broker.url, token)

        async def warm() -> bool:
            _, profiles = await api.call("GET", "/fleet")
            return all(p["ready"] == 1 for p in profiles)

        await eventually(warm, what="a warm pod of each profile")
        await alice.login("alice")

        # A script without a choice is told to choose; nothing is claimed for it.
        async with alice.http.get(broker.url + "/sdapi/v1/options") as resp:
            body = await resp.json()
            assert resp.status == 409 and body["profiles"] == ["t4", "l4"]
        status, path, page = await alice.page("/some/page?x=1")
        assert status == 200 and path == "/_broker/choose"
        for text in ("Small GPU", "NVIDIA T4", "Big GPU", "NVIDIA L4", "1 free now"):
            assert text in page
        assert field(page, "next") == "/some/page?x=1"

        forged = {"csrf_token": "forged", "profile": "l4", "next": "/"}
        assert (await alice.post_form("/_broker/choose", forged))[0] == 403
        status, path, _ = await alice.post_form(
            "/_broker/choose",
            {"csrf_token": field(page, "csrf_token"), "profile": "l4", "next": "/"},
        )
        who = await alice.whoami()
        assert who is not None and who["pod"].startswith("l4-") and who["user"] == "alice"

        # Remembered per user: after the session ends, a new login goes straight to an L4.
        assert (await api.call("POST", "/sessions/alice/reclaim"))[0] == 200
        await again.login("alice")
        status, path, page = await again.page("/")
        assert path != "/_broker/choose" and "Start a new WebUI" in page  # the ended page
        start = {"csrf_token": field(page, "csrf_token"), "next": "/"}
        status, path, _ = await again.post_form("/_broker/start", start)
        assert path != "/_broker/choose"
        fresh = await eventually(again.whoami, what="alice's next WebUI")
        assert fresh["pod"].startswith("l4-") and fresh["pod"] != who["pod"]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        assert client.get(keys.profile_choice("alice")) == "l4"
        assert client.ttl(keys.profile_choice("alice")) > 86400
        client.close()
    finally:
        for person in (root, alice, again):
            await person.close()
