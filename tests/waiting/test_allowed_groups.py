"""allowed_groups per profile (issue 19, section 3), through a real broker with header login:
the chooser lists only the kinds open to a person's groups, and a claim of another kind is
a 403 page that says which kind is closed to them; nothing is claimed or remembered."""

from __future__ import annotations

from pathlib import Path

import redis

from fleet import keys
from tests.admin.support import Api, Person, field, fleet_file

HEADER_ENV = {
    "SDB_AUTH": "header",
    "SDB_TRUSTED_PROXIES": "127.0.0.1/32",
    "SDB_ADMIN_USERS": "root",
}
STAFF = {"X-Forwarded-Groups": "staff"}
A100 = {"X-Forwarded-Groups": "staff, a100-users"}


def restricted(path: Path, *profiles: dict[str, object]) -> Path:
    """A fleet file whose profile `a100` is for the group a100-users only."""
    fleet = fleet_file(path, path.parent / "outputs", *profiles)
    text = fleet.read_text()
    assert "  - name: a100\n" in text
    fleet.write_text(
        text.replace("  - name: a100\n", "  - name: a100\n    allowed_groups: [a100-users]\n")
    )
    return fleet


async def test_chooser_hides_a_closed_profile_and_refuses_a_forged_choice(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = restricted(tmp_path / "fleet.yaml",
                       {"name": "t4", "display": "Small GPU", "buffer": 0, "max": 1},
                       {"name": "a100", "display": "Huge GPU", "buffer": 0, "max": 1})  # fmt: skip
    broker = brokers(fleet=fleet, **HEADER_ENV)
    bob, ann = Person(broker.url, header_user="bob"), Person(broker.url, header_user="ann")
    root = Person(broker.url, header_user="root")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        status, path, page = await bob.page("/", headers=STAFF)
        assert (status, path) == (200, "/_broker/choose")
        assert "Small GPU" in page and "Huge GPU" not in page and 'value="a100"' not in page
        async with bob.http.get(broker.url + "/sdapi/v1/options", headers=STAFF) as resp:
            assert resp.status == 409 and (await resp.json())["profiles"] == ["t4"]

        form = {"csrf_token": field(page, "csrf_token"), "profile": "a100", "next": "/"}
        status, _, refused = await bob.post_form("/_broker/choose", form, headers=STAFF)
        assert status == 403
        assert "Huge GPU WebUIs are open only to some groups" in refused
        assert "(bob)" in refused and "/_broker/choose" in refused and "Traceback" not in refused
        assert client.get(keys.profile_choice("bob")) is None
        assert not client.exists(keys.claim("bob"))

        status, _, page = await ann.page("/_broker/choose", headers=A100)
        assert status == 200 and "Small GPU" in page and "Huge GPU" in page
        form = {"csrf_token": field(page, "csrf_token"), "profile": "a100", "next": "/"}
        async with ann.http.post(broker.url + "/_broker/choose", data=form, headers=A100,
                                 allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303
        assert client.get(keys.profile_choice("ann")) == "a100"

        # Admins see the rule (and each profile's max_session) on the console and the API.
        _, _, console = await root.page("/_broker/admin")
        assert "only a100-users" in console
        token, _ = await root.admin_token()
        status, profiles = await Api(root.http, broker.url, token).call("GET", "/fleet")
        assert status == 200
        assert {p["name"]: p["allowed_groups"] for p in profiles} == {
            "t4": [],
            "a100": ["a100-users"],
        }
        assert {p["max_session_seconds"] for p in profiles} == {12 * 3600}
    finally:
        client.close()
        for person in (bob, ann, root):
            await person.close()


async def test_a_site_whose_only_profile_is_closed_says_so(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = restricted(tmp_path / "fleet.yaml",
                       {"name": "a100", "display": "Huge GPU", "buffer": 0, "max": 1})  # fmt: skip
    broker = brokers(fleet=fleet, **HEADER_ENV)
    bob = Person(broker.url, header_user="bob")
    try:
        status, _, page = await bob.page("/", headers=STAFF)
        assert status == 403 and "Not open to you" in page
        assert "Huge GPU WebUIs are open only to some groups" in page and "(bob)" in page
        assert "choose another kind" not in page  # there is none
        async with bob.http.get(broker.url + "/sdapi/v1/options", headers=STAFF) as resp:
            body = await resp.json()
            assert resp.status == 403 and body["profile"] == "a100"
        # An open tab's polling (not activity) claims on one-profile sites: refused first.
        poll = {"id_task": "task(x)", "id_live_preview": -1}
        async with bob.http.post(
            broker.url + "/internal/progress", json=poll, headers=STAFF
        ) as resp:
            assert resp.status == 403
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert not client.exists(keys.claim("bob"))
            assert not client.zcard(keys.queue("a100"))
        finally:
            client.close()
    finally:
        await bob.close()
