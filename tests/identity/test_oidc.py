"""oidc mode against a real OpenID provider: the flow, its sessions, and every way to cheat it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from redis.asyncio import Redis

from broker.auth.sessions import SessionStore
from fleet import keys
from tests.support.procs import Broker, wait_for

from .helpers import (
    OPEN_REDIRECTS,
    Browser,
    Response,
    assert_spoofs_dropped,
    authorize,
    claims_in_redis,
    form_field,
    login,
    pod_log_lines,
    redis_keys,
    redis_url,
    request,
    websocket_status,
)
from .provider import CLIENT_ID, Provider, oidc_broker


@pytest.fixture(scope="module")
def broker(start_broker: Callable[..., Broker], provider: Provider) -> Broker:
    return oidc_broker(
        start_broker,
        provider,
        SDB_ALLOWED_DOMAINS="example.com",
        SDB_ALLOWED_GROUPS="sd-users",
        SDB_SESSION_CACHE_TTL="1s",
    )


@pytest.fixture(scope="module")
def db(broker: Broker) -> str:
    """The broker's Redis database, to look at what it recorded."""
    return redis_url(broker)


@pytest.fixture(autouse=True)
def honest_provider(provider: Provider) -> Iterator[None]:
    provider.tamper = {}
    yield
    provider.tamper = {}


def sessions_of(redis_url: str, user: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return client.smembers(keys.user_sessions(user))
    finally:
        client.close()


def test_login_lands_in_own_webui_with_pkce_nonce_and_a_hashed_ticket(
    broker: Broker, provider: Provider, db: str
) -> None:
    browser = Browser()
    start = browser.get(broker.url + "/_broker/login?next=/stub/whoami")
    params = parse_qs(urlsplit(start.location).query)
    assert params["code_challenge_method"] == ["S256"] and params["code_challenge"]
    assert params["nonce"] and params["state"] and "code_verifier" not in params
    assert "sdb_login" in browser.cookies["127.0.0.1"]
    done = login(browser, broker, "ann", "/stub/whoami")
    assert done.status == 302 and done.header("Location") == "/stub/whoami"
    me = browser.follow(done).json()
    assert me["user"] == "ann@example.com" and me["cookies"] == []
    ticket = browser.cookies["127.0.0.1"]["sdb_session"]
    assert "sdb_login" not in browser.cookies["127.0.0.1"]
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    assert digest in sessions_of(db, "ann@example.com")
    client = redis.Redis.from_url(db, decode_responses=True)
    try:
        stored = client.hgetall(keys.session(digest))
        assert ticket not in str(stored) and not redis_keys(db, f"*{ticket}*")
        assert 12 * 3600 - 60 < client.ttl(keys.session(digest)) <= 12 * 3600
    finally:
        client.close()
    assert (
        websocket_status(broker.url + "/stub/ws-echo", headers={"Cookie": f"sdb_session={ticket}"})
        == 101
    )


def test_every_login_gets_a_new_session_and_drops_the_old(broker: Broker) -> None:
    browser = Browser()
    assert login(browser, broker, "bob").status == 302
    first = browser.cookies["127.0.0.1"]["sdb_session"]
    assert login(browser, broker, None).status == 302  # provider's SSO: no form this time
    second = browser.cookies["127.0.0.1"]["sdb_session"]
    assert first != second
    old = request(broker.url + "/stub/whoami", headers={"Cookie": f"sdb_session={first}"})
    assert old.status == 401
    new = request(broker.url + "/stub/whoami", headers={"Cookie": f"sdb_session={second}"})
    assert new.json()["user"] == "bob@example.com"  # the provider said Bob@Example.com


def test_logout_ends_both_sessions_then_another_user_logs_in(
    broker: Broker, provider: Provider
) -> None:
    browser = Browser()
    login(browser, broker, "ann")
    ticket = browser.cookies["127.0.0.1"]["sdb_session"]
    ann = browser.follow(browser.get(broker.url + "/stub/whoami")).json()
    page = browser.get(broker.url + "/_broker/logout")
    assert "ann@example.com" in page.text
    assert browser.post(broker.url + "/_broker/logout", {}).status == 403  # no CSRF token
    out = browser.post(
        broker.url + "/_broker/logout", {"csrf_token": form_field(page.text, "csrf_token")}
    )
    assert out.status == 302 and out.location.startswith(provider.issuer + "/end-session")
    query = parse_qs(urlsplit(out.location).query)
    assert query["post_logout_redirect_uri"] == [broker.url + "/_broker/logged-out"]
    assert query["id_token_hint"] and query["client_id"] == [CLIENT_ID]
    landed = browser.follow(out)
    assert landed.url == broker.url + "/_broker/logged-out" and landed.status == 200
    assert provider.ended[-1] == "sub-ann"
    assert request(broker.url + "/", headers={"Cookie": f"sdb_session={ticket}"}).status == 401
    # The provider's session ended too: the next login asks who you are.
    assert login(browser, broker, "bob").status == 302
    bob = browser.follow(browser.get(broker.url + "/stub/whoami")).json()
    assert bob["user"] == "bob@example.com" and bob["pod"] != ann["pod"]


def test_admin_revocation_reaches_the_broker(broker: Broker, db: str) -> None:
    browser = Browser()
    login(browser, broker, "carol")
    cookie = {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}
    assert request(broker.url + "/", headers=cookie).status != 401

    async def revoke() -> int:
        client = Redis.from_url(db, decode_responses=True)
        try:
            return await SessionStore(client, ttl=3600, cache_ttl=1).revoke_user(
                "carol@partner.org"
            )
        finally:
            await client.aclose()

    assert asyncio.run(revoke()) == 1
    wait_for(lambda: request(broker.url + "/", headers=cookie).status == 401, 5, what="revocation")


def test_client_identity_headers_are_dropped(broker: Broker) -> None:
    browser = Browser()
    login(browser, broker, "ann")
    cookie = {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}
    assert_spoofs_dropped(broker, cookie, "ann@example.com")


def test_unauthenticated_people_are_sent_to_login_and_scripts_get_401(broker: Broker) -> None:
    page = request(broker.url + "/some/page?x=1", headers={"Accept": "text/html"})
    assert page.status == 302
    location = urlsplit(page.location)
    assert location.path == "/_broker/login"
    assert parse_qs(location.query)["next"] == ["/some/page?x=1"]
    assert request(broker.url + "/sdapi/v1/progress").status == 401
    assert websocket_status(broker.url + "/stub/ws-echo") == 401


# --- A callback that must not log anyone in ---------------------------------------------


def refused_callback(browser: Browser, callback: Callable[[], Response], db: str,
                     user: str) -> Response:  # fmt: skip
    """Run the callback: a 400 page, no session cookie, no new session for `user` in Redis."""
    before = sessions_of(db, user)
    resp = callback()
    assert resp.status == 400, (resp.status, resp.text[:300])
    assert "sdb_session" not in browser.cookies["127.0.0.1"]
    assert sessions_of(db, user) == before
    return resp


def test_bad_state(broker: Broker, db: str) -> None:
    browser = Browser()
    callback = authorize(browser, broker, "eve").location
    forged = callback.replace("state=", "state=x")
    refused_callback(browser, lambda: browser.get(forged), db, "eve@evil.org")


def test_callback_in_another_browser(broker: Broker, db: str) -> None:
    """Login CSRF: a callback URL for the attacker's login, opened by the victim."""
    attacker, victim = Browser(), Browser()
    callback = authorize(attacker, broker, "eve").location
    refused_callback(victim, lambda: victim.get(callback), db, "eve@evil.org")
    # ...and the attacker's own browser still finishes it: the state was not used up.
    assert attacker.get(callback).status == 302


def test_replayed_code(broker: Broker, provider: Provider, db: str) -> None:
    browser = Browser()
    callback = authorize(browser, broker, "frank").location
    login_cookie = browser.cookies["127.0.0.1"]["sdb_login"]
    assert browser.get(callback).status == 302  # first use logs in
    browser.cookies["127.0.0.1"].pop("sdb_session")
    # The same callback again, with the login cookie it had: the state is used up.
    browser.cookies["127.0.0.1"]["sdb_login"] = login_cookie
    refused_callback(browser, lambda: browser.get(callback), db, "frank@partner.org")
    # A fresh login whose callback carries the old code: the provider refuses the code.
    replays = provider.replays
    fresh = authorize(browser, broker, None).location
    old_code = parse_qs(urlsplit(callback).query)["code"][0]
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    replay = f"{broker.url}/_broker/callback?code={old_code}&state={state}"
    refused_callback(browser, lambda: browser.get(replay), db, "frank@partner.org")
    assert provider.replays == replays + 1


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"nonce": "not-the-nonce-we-sent"}, id="nonce mismatch"),
        pytest.param({"aud": "another-client"}, id="ID token for another client"),
        pytest.param({"aud": [CLIENT_ID, "another-client"]}, id="two audiences, no azp"),
        pytest.param({"aud": CLIENT_ID, "azp": "another-client"}, id="azp of another client"),
        pytest.param(
            {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, id="expired"
        ),
        pytest.param({"iat": int(time.time()) + 3600}, id="issued in the future"),
        pytest.param({"iss": "https://evil.example"}, id="another issuer"),
        pytest.param({"email_verified": False}, id="unverified email"),
        pytest.param({"email_verified": "false"}, id="unverified email as a string"),
        pytest.param({"email": None}, id="no email"),
    ],
)
def test_untrustworthy_id_token(broker: Broker, provider: Provider, db: str, tamper: dict) -> None:
    provider.tamper = tamper
    browser = Browser()
    refused_callback(browser, lambda: login(browser, broker, "ann"), db, "ann@example.com")


def test_unverified_email_is_refused(broker: Broker, db: str) -> None:
    browser = Browser()
    resp = refused_callback(browser, lambda: login(browser, broker, "dave"), db, "dave@example.com")
    assert "not verified" in resp.text


@pytest.mark.parametrize(
    ("username", "allowed"),
    [("eve", False), ("frank", False), ("carol", True), ("bob", True)],
    ids=["other domain", "other group", "allowed group", "allowed domain"],
)
def test_allow_lists(broker: Broker, db: str, username: str, allowed: bool) -> None:
    browser = Browser()
    assert login(browser, broker, username).status == 302
    email = {"eve": "eve@evil.org", "frank": "frank@partner.org", "carol": "carol@partner.org",
             "bob": "bob@example.com"}[username]  # fmt: skip
    marker = f"allow-{username}"
    page = browser.get(f"{broker.url}/stub/whoami?{marker}")
    cookie = {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}
    if allowed:  # (503, or the wait page, only while a fresh WebUI warms up for a first-timer)
        page = wait_for(
            lambda: not _warming(r := browser.get(broker.url + "/stub/whoami")) and r, 20
        )
        assert page.status == 200 and page.json()["user"] == email
        return
    assert page.status == 403
    assert email in page.text and 'action="/_broker/logout"' in page.text
    api = request(f"{broker.url}/sdapi/v1/progress?{marker}", headers=cookie)
    assert api.status == 403 and api.json()["user"] == email
    assert websocket_status(f"{broker.url}/stub/ws-echo?{marker}", headers=cookie) == 403
    assert email not in claims_in_redis(db)
    assert pod_log_lines(broker.data_dir, marker) == []


def _warming(page: Response) -> bool:
    return page.status == 503 or (
        page.status == 302 and urlsplit(page.location).path == "/_broker/wait"
    )


def test_next_never_leaves_the_origin(broker: Broker) -> None:
    browser = Browser()
    login(browser, broker, "bob")  # so the provider signs in by SSO from here on
    for target in OPEN_REDIRECTS:
        done = login(browser, broker, None, target)
        assert done.status == 302 and done.header("Location") == "/", target
    for target in ("/stub/whoami", "/some/page?x=1&y=//z", "/a/b#frag"):
        done = login(browser, broker, None, target)
        assert done.header("Location") == target
