"""The admin API's people and automation: /users with a cursor and filters, starting and
ending a user's session, their session history, PUT /spec, token scopes (every refusal
a 403 naming the scope), last use, and X-Sdbroker-Token beside IAP's own token."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import redis

from broker.api import API, document
from fleet import keys
from tests.admin.support import Api, Person, eventually, fleet_file
from tests.identity.iap_keys import AUDIENCE, IapKeys
from tests.support import procs
from tests.support.procs import http_ok

ALL = ("read", "sessions", "fleet", "tokens")
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ASSERTION = "x-goog-iap-jwt-assertion"


async def _pages(api: Api, query: str) -> list[list[str]]:
    """Every page of /users for `query`, following `next` to the end."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        status, page = await api.call(
            "GET", f"/users?{query}{'&cursor=' + cursor if cursor else ''}"
        )
        assert status == 200, page
        pages.append([u["user"] for u in page["users"]])
        if page["next"] is None:
            return pages
        cursor = page["next"]


async def test_users_start_end_and_history(brokers, tmp_path: Path, redis_url: str) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root, carol = Person(broker.url), Person(broker.url)
    bare = aiohttp.ClientSession()
    now = time.time()
    seen = {f"u{i:02d}": now - 3600 * i for i in range(1, 6)}  # u01 an hour ago ... u05
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.zadd(keys.ACTIVITY, seen)
    try:
        await root.login("root")
        api = Api(bare, broker.url, (await root.admin_token("ops", scopes=ALL))[0])

        async def warm() -> bool:
            return (await api.call("GET", "/fleet"))[1][0]["ready"] >= 1

        await eventually(warm, what="a warm pod")
        # Start a session for carol before she ever comes: a warm pod is claimed for her.
        status, done = await api.call("POST", "/users/carol/session", {})
        assert status == 201 and done["ok"], done
        status, again = await api.call("POST", "/users/carol/session", {})
        assert status == 409 and "already has a session" in again["detail"]
        status, body = await api.call("POST", "/users/dave/session", {"profile": "nope"})
        assert status == 409 and "no profile 'nope'" in body["detail"]
        assert (await api.call("POST", "/users/dave/session", {"bogus": 1}))[0] == 422
        assert (await api.call("POST", "/users/a%20b/session", {}))[0] == 400

        # Pages of two, in name order, every person once; the filters narrow them.
        pages = await _pages(api, "limit=2")
        assert [len(p) for p in pages] == [2, 2, 2]
        assert sum(pages, []) == ["carol", *sorted(seen)]
        status, page = await api.call("GET", "/users?session=true")
        assert [u["user"] for u in page["users"]] == ["carol"] and page["next"] is None
        assert page["users"][0]["gpu_minutes"] >= 0.0
        pod = page["users"][0]["session"]["pod"]
        assert sum(await _pages(api, "session=false&limit=3"), []) == sorted(seen)
        recent = sum(await _pages(api, f"seen_after={now - 3600 * 2.5}"), [])
        assert recent == ["carol", "u01", "u02"]  # a claim counts as activity
        assert sum(await _pages(api, f"seen_before={now - 3600 * 3.5}"), []) == ["u04", "u05"]
        for bad in ("limit=0", "limit=x", "cursor=%%%", "session=maybe", "seen_after=soon"):
            status, body = await api.call("GET", f"/users?{bad}")
            assert status == 400 and body["error"] == "Bad request", (bad, body)

        # Carol logs in and lands in the very pod the API claimed for her.
        await carol.login("carol")
        who = await eventually(carol.whoami, what="carol's WebUI")
        assert who["user"] == "carol" and who["pod"] == pod

        # End it; then her history has it, newest first, with a cursor.
        status, done = await api.call("DELETE", "/users/carol/session")
        assert status == 200 and done["ok"]
        assert (await api.call("DELETE", "/users/carol/session"))[0] == 404
        await eventually(warm, what="a warm pod again")
        assert (await api.call("POST", "/users/carol/session", {}))[0] == 201
        assert (await api.call("DELETE", "/users/carol/session?reason=quota%0Aspent"))[0] == 200
        [(_, entry)] = [
            (i, f)
            for i, f in client.xrevrange(keys.AUDIT)
            if f.get("reason") and f["user"] == "carol"
        ][:1]
        assert entry["by"] == "token:ops" and entry["detail"] == "quota spent"  # one line
        status, first = await api.call("GET", "/users/carol/sessions?limit=1")
        assert status == 200 and len(first["sessions"]) == 1 and first["next"]
        status, second = await api.call(
            "GET", f"/users/carol/sessions?limit=1&cursor={first['next']}"
        )
        assert status == 200 and second["next"] is None
        ended = first["sessions"] + second["sessions"]
        assert [s["reason"] for s in ended] == ["admin", "admin"]
        assert ended[1]["pod"] == pod and ended[0]["pod"] != pod
        assert ended[0]["at"] >= ended[1]["at"]
        assert (await api.call("GET", "/users/carol/sessions?cursor=junk"))[0] == 400
        assert (await api.call("GET", "/users/nobody/sessions"))[1] == {
            "sessions": [],
            "next": None,
        }

        # Revoking logins is one verb with the older POST .../logout; dev mode keeps none.
        status, body = await api.call("DELETE", "/users/carol/logins")
        assert status == 404 and "keeps no logins" in body["detail"]
    finally:
        client.close()
        await root.close()
        await carol.close()
        await bare.close()


def _path(template: str) -> str:
    return (
        template.replace("{user}", "nobody")
        .replace("{pod}", "nopod")
        .replace("{profile}", "default")
    )


async def test_every_scope_is_enforced_and_tokens_show_use(brokers, tmp_path: Path) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 0, "max": 1})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root = Person(broker.url)
    bare = aiohttp.ClientSession()
    try:
        await root.login("root")
        without: dict[str, Api] = {}
        for scope in ALL:
            token, _ = await root.admin_token(
                f"no-{scope}", scopes=tuple(s for s in ALL if s != scope)
            )
            without[scope] = Api(bare, broker.url, token)
        dashboard, dashboard_id = await root.admin_token("dashboard", scopes=("read",))
        checked = 0
        for e in API:
            if e.public:
                continue
            path = _path(e.path)
            body: Any = {} if e.body is not None else None
            status, answer = await without[e.scope].call(e.method, path, body)
            assert status == 403, (e.method, e.path, status, answer)
            assert answer["error"] == f"Needs the {e.scope} scope", answer
            assert repr(e.scope) in answer["detail"]
            # Any other token that has the scope gets past the check.
            other = next(s for s in ALL if s != e.scope)
            assert (await without[other].call(e.method, path, body))[0] != 403, e.path
            checked += 1
        assert checked == sum(not e.public for e in API) >= 15

        # A dashboard's token reads and does nothing else.
        reader = Api(bare, broker.url, dashboard)
        assert (await reader.call("GET", "/users"))[0] == 200
        status, body = await reader.call("DELETE", "/users/x/session")
        assert status == 403 and body["error"] == "Needs the sessions scope"

        # Owner, scopes, expiry and last use, seen through the API and the console.
        status, tokens = await without["read"].call("GET", "/tokens")
        assert status == 200
        row = next(t for t in tokens if t["id"] == dashboard_id)
        assert row["by"] == "root" and row["scopes"] == ["read"] and row["scope"] == "read"
        assert row["expires"] > row["created"] and row["last_used"] >= row["created"]
        assert next(t for t in tokens if t["name"] == "no-read")["scopes"] == [
            "sessions", "fleet", "tokens"]  # fmt: skip
        _, _, console = await root.page("/_broker/admin")
        assert 'name="scopes" value="tokens"' in console and "last used" in console
    finally:
        await root.close()
        await bare.close()


async def test_spec_is_validated_diffed_and_applied_over_http(brokers, tmp_path: Path) -> None:
    path = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 0, "max": 1})
    broker = brokers(fleet=path, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root = Person(broker.url)
    bare = aiohttp.ClientSession()
    try:
        await root.login("root")
        api = Api(bare, broker.url, (await root.admin_token("deploy", scopes=ALL))[0])
        text = path.read_text()
        bigger = text.replace("max: 1", "max: 2")
        assert bigger != text

        status, dry = await api.send_text("PUT", "/spec?dry_run=true", bigger)
        assert status == 200 and dry["applied"] is False, dry
        assert "profile default: max 1 -> 2" in dry["changes"]
        assert "-    max: 1\n+    max: 2" in dry["diff"]
        assert (await api.call("GET", "/fleet"))[1][0]["sizes"]["max"] == 1

        # Bad YAML and a bad field: FILE:LINE messages in the JSON, nothing applied.
        line = bigger.splitlines().index("    max: 2") + 1
        status, bad = await api.send_text("PUT", "/spec", bigger.replace("max: 2", "max: -3"))
        assert status == 422 and bad["error"] == "Invalid fleet spec", bad
        assert bad["issues"][0]["line"] == line and bad["issues"][0]["file"] == "body"
        assert f"body:{line}: " in bad["detail"] and "unchanged" in bad["detail"]
        status, bad = await api.send_text("PUT", "/spec", bigger + "  - [unclosed\n")
        assert status == 422 and bad["issues"][0]["field"] == "syntax"
        status, bad = await api.send_text(
            "PUT", "/spec", bigger.replace("backend: local", "backend: agones")
        )
        assert status == 422 and "profiles[0].agones: required by backend agones" in bad["detail"]
        assert (await api.call("GET", "/fleet"))[1][0]["sizes"]["max"] == 1

        status, done = await api.send_text("PUT", "/spec", bigger)
        assert status == 200 and done["applied"] is True and done["brokers_heard"] >= 1

        async def swapped() -> bool:
            return (await api.call("GET", "/fleet"))[1][0]["sizes"]["max"] == 2

        await eventually(swapped, what="the broker running the applied spec")
        status, same = await api.send_text("PUT", "/spec", bigger)
        assert status == 200 and same["applied"] is False and same["changes"] == []
        _, reclaims = await api.call("GET", "/reclaims")  # audit holds reasons only; spec is
        assert all(r["reason"] for r in reclaims)  # an action, not listed as a reclaim
    finally:
        await root.close()
        await bare.close()


async def test_a_script_behind_iap_sends_its_token_in_x_sdbroker_token(
    brokers, tmp_path: Path
) -> None:
    keys_server = IapKeys().start()
    ann = "ann@example.com"
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 0, "max": 1})
    # In iap mode readyz wants a token like every page but healthz: wait on healthz.
    healthz = lambda url: http_ok(url.replace("/_broker/readyz", "/_broker/healthz"))  # noqa: E731
    with mock.patch.object(procs, "http_ok", healthz):
        broker = brokers(fleet=fleet, SDB_AUTH="iap", SDB_IAP_AUDIENCE=AUDIENCE,
                         SDB_IAP_JWKS_URL=keys_server.jwks_url, SDB_ADMIN_USERS=ann)  # fmt: skip
    admin = Person(broker.url)
    script = aiohttp.ClientSession()
    try:
        admin.http.headers[ASSERTION] = keys_server.mint(ann)
        token, _ = await admin.admin_token("cron", scopes=("read",))
        url = broker.url + "/_broker/api/v1/fleet"
        iap = {ASSERTION: keys_server.mint(ann)}
        # IAP passed the request (its assertion) and the script's own Google ID token still
        # sits in Authorization: the broker's token rides in X-Sdbroker-Token.
        both = {
            **iap,
            "Authorization": "Bearer eyJhbGciOi.google-id-token",
            "X-Sdbroker-Token": token,
        }
        async with script.get(url, headers=both) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())[0]["name"] == "default"
        async with script.get(url, headers={**iap, "X-Sdbroker-Token": token}) as resp:
            assert resp.status == 200
        # Without it the API refuses (the IAP token is no broker token) ...
        async with script.get(url, headers={**iap, "Authorization": "Bearer eyJ.google"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "Not authorised"
        # ... and without IAP's assertion the broker's token alone gets nowhere.
        async with script.get(url, headers={"X-Sdbroker-Token": token}) as resp:
            assert resp.status == 401 and "Identity-Aware Proxy" in await resp.text()
        # A wrong X-Sdbroker-Token is not rescued by a right Authorization: one token is read.
        wrong = {**iap, "X-Sdbroker-Token": "sdbt_wrong", "Authorization": f"Bearer {token}"}
        async with script.get(url, headers=wrong) as resp:
            assert resp.status == 401
    finally:
        await admin.close()
        await script.close()
        keys_server.stop()


def test_docs_list_every_endpoint_with_its_scope() -> None:
    """docs/api.md's table is the operator's map: each row is a real route and scope."""
    rows = set(re.findall(r"^\| `(\w+) (/\S*)` \| (\w+) \|", API_DOC.read_text(), re.M))
    wanted = {(e.method, e.path, "none" if e.public else e.scope) for e in API}
    assert rows == wanted
    # The OpenAPI document says the same: the scope, its 403, both ways to send a token.
    doc = document()
    users = doc["paths"]["/_broker/api/v1/users/{user}/session"]["delete"]
    assert "`sessions` scope" in users["description"] and "403" in users["responses"]
    assert doc["components"]["securitySchemes"]["header"]["name"] == "X-Sdbroker-Token"
    spec = doc["paths"]["/_broker/api/v1/spec"]["put"]
    assert "application/yaml" in spec["requestBody"]["content"] and "422" in spec["responses"]


async def test_a_blocked_user_gets_no_webui_until_unblocked(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """Issue 20: `/users` filters by blocked, so there is a blocked to filter by. Blocking
    ends the session now (every broker's cached route goes with it), refuses any new one
    with a page that says so, and is listed; unblocking lets the person start again."""
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 3})
    first = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root", SDB_WORKERS="2")
    root, carol = Person(first.url), Person(first.url)
    bare = aiohttp.ClientSession()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await root.login("root")
        await carol.login("carol")
        pod = (await eventually(carol.whoami, what="carol's WebUI"))["pod"]
        api = Api(bare, first.url, (await root.admin_token("ops", scopes=ALL))[0])

        status, done = await api.call("PUT", "/users/carol/block?reason=abuse")
        assert status == 200 and done["ok"] and "session ended" in done["detail"], done
        assert (await api.call("PUT", "/users/carol/block"))[0] == 409  # once
        assert not client.exists(keys.claim("carol"))
        [end] = [f for _, f in client.xrevrange(keys.AUDIT) if f.get("reason") == "admin"][:1]
        assert end["user"] == "carol" and end["pod"] == pod and end["detail"] == "blocked"

        # Every process of the broker refuses her, page loads and scripts alike.
        for _ in range(4):
            status, _, page = await carol.page("/")
            assert status == 403 and "Access blocked" in page and "Traceback" not in page
            async with carol.http.get(first.url + "/stub/whoami") as resp:
                assert resp.status == 403
        status, _, page = await carol.page("/_broker/wait?next=/")
        assert status == 403 and "Access blocked" in page
        assert not client.exists(keys.claim("carol")) and not client.zcard(keys.queue("default"))
        status, body = await api.call("POST", "/users/carol/session", {})
        assert status == 409 and "blocked" in body["detail"]

        assert sum(await _pages(api, "blocked=true"), []) == ["carol"]
        assert "carol" not in sum(await _pages(api, "blocked=false"), [])
        assert (await api.call("GET", "/users?blocked=maybe"))[0] == 400

        status, done = await api.call("DELETE", "/users/carol/block")
        assert status == 200 and done["ok"]
        assert (await api.call("DELETE", "/users/carol/block"))[0] == 404
        # Back: the page says her session ended (blocked) and its button starts a new one.
        status, _, page = await carol.page("/")
        assert status == 200 and "Start a new WebUI" in page
    finally:
        client.close()
        await root.close()
        await carol.close()
        await bare.close()
