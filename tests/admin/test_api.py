"""The admin JSON API: bearer tokens (created, used, revoked, stored hashed), reads and actions,
the OpenAPI document, and the metrics page's access rules."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import aiohttp
import redis

from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file


async def test_tokens_are_created_used_and_revoked(brokers, tmp_path: Path, redis_url: str) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root = Person(broker.url)
    bare = aiohttp.ClientSession()  # no cookies: the API must stand on the token alone
    try:
        await root.login("root")
        token, token_id = await root.admin_token("ci")
        api = Api(bare, broker.url, token)
        status, profiles = await api.call("GET", "/fleet")
        assert status == 200 and profiles[0]["name"] == "default"
        assert profiles[0]["sizes"] == {"min": 0, "buffer": 1, "max": 2}

        # Stored hashed: the token appears nowhere in Redis, its SHA-256 is the key.
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stored = client.hgetall(keys.API_TOKENS)
        client.close()
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        assert all(token not in k and token not in v for k, v in stored.items())

        status, listed = await api.call("GET", "/tokens")
        assert status == 200 and [t["id"] for t in listed] == [token_id]
        assert "token" not in listed[0] and listed[0]["scope"] == "admin"
        assert listed[0]["expires"] > listed[0]["created"]
        # A token cannot mint or revoke tokens: that is the console's alone.
        assert (await api.call("POST", "/tokens", {"name": "deploy"}))[0] in (404, 405)
        assert (await api.call("DELETE", f"/tokens/{token_id}"))[0] in (404, 405)
        second, second_id = await root.admin_token("deploy")
        other = Api(bare, broker.url, second)
        assert (await other.call("GET", "/pods"))[0] == 200

        # Revoked from the console; then nothing works.
        _, _, console = await root.page("/_broker/admin")
        assert second_id in console
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', console)[1]  # type: ignore[index]
        status, _, _ = await root.post_form(
            "/_broker/admin/tokens/revoke", {"csrf_token": csrf, "id": second_id}
        )
        assert status == 200
        assert (await other.call("GET", "/pods"))[0] == 401
        assert (await api.call("GET", "/pods"))[0] == 200  # the first one still works

        # No token, a made-up one, or an admin's cookies alone: 401 with a challenge.
        async with bare.get(broker.url + "/_broker/api/v1/fleet") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await Api(bare, broker.url, "sdbt_made-up").call("GET", "/fleet"))[0] == 401
        async with root.http.get(broker.url + "/_broker/api/v1/fleet") as resp:
            assert resp.status == 401

        async with bare.get(broker.url + "/_broker/api/v1/openapi.json") as resp:
            doc = await resp.json()
        assert doc["openapi"].startswith("3.1")
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "put" in doc["paths"]["/_broker/api/v1/profiles/{profile}/sizes"]
        assert "SizeChange" in doc["components"]["schemas"]
    finally:
        await root.close()
        await bare.close()


async def test_reads_actions_and_metrics(brokers, tmp_path: Path) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 1})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root", SDB_QUEUE_GRACE="30s")
    root, alice, bob, anon = (
        Person(broker.url),
        Person(broker.url),
        Person(broker.url),
        Person(broker.url),
    )
    try:
        await root.login("root")
        await alice.login("alice")
        await bob.login("bob")
        token, _ = await root.admin_token()
        api = Api(anon.http, broker.url, token)

        async def warm() -> bool:
            return (await api.call("GET", "/fleet"))[1][0]["ready"] == 1

        await eventually(warm, what="a warm pod")
        await eventually(alice.whoami, what="alice's WebUI")

        # bob's script while he waits: 503, Retry-After and the facts as JSON.
        async with bob.http.get(broker.url + "/sdapi/v1/options") as resp:
            body = await resp.json()
            assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
        assert body["position"] == 1 and body["queue"] == 1 and body["phase"] == "full"
        assert body["eta"] > 800  # alice may stay 15 minutes without a click
        assert body["events"] == "/_broker/events"

        status, sessions = await api.call("GET", "/sessions")
        assert status == 200 and [s["user"] for s in sessions] == ["alice"]
        assert sessions[0]["busy"] is False and sessions[0]["idle_seconds"] is not None
        status, queue = await api.call("GET", "/queue")
        assert [(w["user"], w["position"]) for w in queue] == [("bob", 1)]

        # Sizes are checked against the profile and the file's ceiling; bodies are closed.
        assert (await api.call("PUT", "/profiles/default/sizes", {"min": 5}))[0] == 422
        status, body = await api.call("PUT", "/profiles/default/sizes", {"max": 9})
        assert status == 422 and "fleet.yaml allows" in body["detail"]
        assert (await api.call("PUT", "/profiles/default/sizes", {"bogus": 1}))[0] == 422
        assert (await api.call("PUT", "/profiles/nope/sizes", {"min": 0}))[0] == 422
        assert (await api.call("PUT", "/profiles/default/sizes", {"buffer": 0}))[0] == 200
        _, profiles = await api.call("GET", "/fleet")
        assert profiles[0]["sizes"]["buffer"] == 0 and profiles[0]["file"]["buffer"] == 1
        assert profiles[0]["override"]["by"] == "token:tests"

        status, done = await api.call("POST", "/sessions/alice/reclaim")
        assert status == 200 and done["ok"]
        assert (await api.call("POST", "/sessions/alice/reclaim"))[0] == 404
        async with bob.http.get(broker.url + "/stub/whoami") as resp:  # bob's stream is not open:
            assert resp.status in (200, 503)  # any request of his takes the freed pod in turn
        who = await eventually(bob.whoami, what="bob's WebUI")
        assert who["user"] == "bob"
        _, reclaims = await api.call("GET", "/reclaims")
        assert (reclaims[0]["user"], reclaims[0]["reason"]) == ("alice", "admin")
        status, pods = await api.call("GET", "/pods")
        assert status == 200 and any(p["user"] == "bob" and p["state"] == "claimed" for p in pods)
        assert (await api.call("DELETE", "/pods/no-such-pod"))[0] == 404

        # Metrics: admins only (no SDB_METRICS_CIDRS here).
        async with root.http.get(broker.url + "/_broker/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert 'sdbroker_pods{profile="default",state="claimed"} 1.0' in text
        assert 'sdbroker_claims_total{profile="default",source="queued"} 1.0' in text
        assert 'sdbroker_claims_total{profile="default",source="warm"} 1.0' in text
        assert 'sdbroker_wait_seconds_count{profile="default"} 1.0' in text
        assert 'sdbroker_reclaims_total{profile="default",reason="admin"} 1.0' in text
        assert 'sdbroker_proxy_requests_total{code="200"}' in text
        for name in ("sdbroker_claim_duration_seconds_count", "sdbroker_pod_start_seconds_count",
                     "sdbroker_proxy_request_duration_seconds_count", "sdbroker_websockets_open",
                     "sdbroker_redis_errors_total", 'sdbroker_queue_length{profile="default"} 0.0'):  # fmt: skip
            assert name in text, name
        async with bob.http.get(broker.url + "/_broker/metrics") as resp:
            assert resp.status == 403
        async with anon.http.get(broker.url + "/_broker/metrics") as resp:
            assert resp.status == 401
    finally:
        for person in (root, alice, bob, anon):
            await person.close()


async def test_metrics_from_a_cidr_and_fleet_gauges_agree_across_replicas(
    brokers, tmp_path: Path
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 3})
    env = {"SDB_AUTH": "dev", "SDB_METRICS_CIDRS": "127.0.0.0/8"}
    first, second = brokers(fleet=fleet, **env), brokers(fleet=fleet, **env)

    def gauges(text: str) -> list[str]:
        return sorted(
            line
            for line in text.splitlines()
            if line.startswith(("sdbroker_pods{", "sdbroker_queue_length"))
        )

    async with aiohttp.ClientSession() as http:

        async def both() -> tuple[list[str], list[str]] | None:
            texts = []
            for broker in (first, second):
                async with http.get(broker.url + "/_broker/metrics") as resp:
                    assert resp.status == 200  # from loopback, inside SDB_METRICS_CIDRS
                    texts.append(gauges(await resp.text()))
            ready = 'sdbroker_pods{profile="default",state="ready"} 2.0'
            return (texts[0], texts[1]) if ready in texts[0] and ready in texts[1] else None

        a, b = await eventually(both, what="two warm pods seen by both replicas")
        assert a == b


async def test_tokens_expire_may_be_read_only_and_die_with_their_creators_rights(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 0, "max": 1})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root,ops")
    root = Person(broker.url)
    bare = aiohttp.ClientSession()
    try:
        await root.login("root")
        reader, _ = await root.admin_token("dashboards", scope="read")
        admin, _ = await root.admin_token("deploy")
        status, body = await Api(bare, broker.url, reader).call("GET", "/fleet")
        assert status == 200
        status, body = await Api(bare, broker.url, reader).call("POST", "/sessions/x/reclaim")
        assert status == 403 and body["error"] == "Needs the sessions scope"
        assert (await Api(bare, broker.url, admin).call("POST", "/sessions/x/reclaim"))[0] == 404

        # The same Redis behind a broker where root is no admin any more: the tokens root
        # made are worth nothing there, however long they would have lived.
        demoted = brokers(fleet=fleet, data_dir=tmp_path / "data2", SDB_AUTH="dev",
                          SDB_ADMIN_USERS="ops")  # fmt: skip
        assert (await Api(bare, demoted.url, admin).call("GET", "/fleet"))[0] == 401
        # And where tokens live a second, they stop working after it.
        short = brokers(fleet=fleet, data_dir=tmp_path / "data3", SDB_AUTH="dev",
                        SDB_ADMIN_USERS="root", SDB_API_TOKEN_TTL="1s")  # fmt: skip
        person = Person(short.url)
        try:
            await person.login("root")
            brief, _ = await person.admin_token("brief")
            assert await _status(bare, short.url, brief) == 200

            async def expired() -> bool:
                return await _status(bare, short.url, brief) == 401

            await eventually(expired, timeout=5, what="the token expired")
        finally:
            await person.close()
    finally:
        await bare.close()
        await root.close()


async def _status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    return (await Api(http, base, token).call("GET", "/fleet"))[0]
