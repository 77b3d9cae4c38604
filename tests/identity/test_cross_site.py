"""Browser-side attacks through the real broker: cross-site requests to a WebUI, cookies
planted by a WebUI, and CSRF tokens used for another person's form.

Each of these got through before (issue 16): a WebSocket handshake and a POST
with `Origin: https://evil.example` were proxied, a pod's `Set-Cookie:
sdb_session=...` reached the browser, and a token from an anonymous login page
passed an admin's form.
"""

from __future__ import annotations

import html
import http.client
import re

import aiohttp
import pytest

from broker.security.cookies import HOST_PREFIX, SESSION_COOKIE
from tests.support.procs import Broker, wait_for
from tests.test_proxy import as_user, claimed

from .helpers import Browser, Response, request

EVIL = "https://evil.example"


@pytest.fixture
def broker(brokers) -> Broker:
    b = brokers(
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_ALLOWED_ORIGINS="https://tools.example.com",
    )
    wait_for(lambda: len(b.pod_records()) >= 1, 20, what="a pod")
    return b


async def ws_status(http: aiohttp.ClientSession, broker: Broker, **headers: str) -> int:
    try:
        async with http.ws_connect(broker.url + "/stub/ws-echo", headers=as_user(**headers)) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "hello"
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_a_websocket_from_another_site_is_refused(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        assert await ws_status(http, broker, Origin=EVIL) == 403
        assert await ws_status(http, broker, Origin="null") == 403  # sandboxed frames
        assert await ws_status(http, broker, **{"Sec-Fetch-Site": "cross-site"}) == 403
        assert await ws_status(http, broker, Origin=broker.url) == 101  # our own page
        assert await ws_status(http, broker, Origin="https://tools.example.com") == 101  # allowed
        assert await ws_status(http, broker) == 101  # no browser: nothing to forge


async def test_unsafe_methods_from_another_site_are_refused(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)

        async def post(**headers: str) -> int:
            async with http.post(
                broker.url + "/stub/upload", data=b"x" * 10, headers=as_user(**headers)
            ) as resp:
                return resp.status

        assert await post(Origin=EVIL) == 403
        assert await post(Origin=EVIL.upper()) == 403
        assert await post(**{"Sec-Fetch-Site": "cross-site", "Origin": broker.url}) == 403
        assert await post(Origin=broker.url) == 200
        assert await post(**{"Sec-Fetch-Site": "same-origin"}) == 200
        assert await post() == 200
        async with http.get(broker.url + "/stub/whoami", headers=as_user(Origin=EVIL)) as resp:
            assert resp.status == 200  # reading is not changing: CORS keeps the answer from evil


async def test_a_webui_cannot_set_the_brokers_cookies(broker: Broker) -> None:
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        query = "sdb_session=forged&__Host-sdb_session=forged&SDB_csrf=x&theme=dark"
        async with http.get(broker.url + "/stub/set-cookie?" + query, headers=as_user()) as resp:
            assert resp.status == 200
            assert len((await resp.json())["set"]) == 4  # the pod did send all four
            assert resp.headers.getall("Set-Cookie") == ["theme=dark; Path=/"]


async def test_a_webui_never_sees_the_brokers_cookies_under_any_name(broker: Broker) -> None:
    """The `__Host-` names (https) are stripped like the plain ones: before, only names
    starting `sdb_` were, so the pod read `__Host-sdb_session`, the session itself."""
    async with aiohttp.ClientSession() as http:
        await claimed(http, broker)
        sent = (
            f"{HOST_PREFIX}{SESSION_COOKIE}=stolen; __HOST-SDB_CSRF=x; SDB_login=y; "
            "__Secure-sdb_session=z; theirs=1"
        )
        async with http.get(broker.url + "/stub/whoami", headers=as_user(Cookie=sent)) as resp:
            assert resp.status == 200
            assert (await resp.json())["cookies"] == ["theirs"]


def test_an_old_plain_cookie_after_the_move_to_https_means_logging_in_again(brokers) -> None:
    """A session cookie from the days of plain names is no session on https (a sibling
    subdomain can set a plain name: accepting it would undo `__Host-`): its owner is sent
    to log in, not shown an error, and the login clears the old cookie."""
    broker = brokers(SDB_AUTH="dev", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a pod")
    old = Browser()
    login_dev(old, broker, "ann")  # plain http: the site before its move
    ticket = old.cookies["127.0.0.1"][SESSION_COOKIE]
    plain = {"Cookie": f"{SESSION_COOKIE}={ticket}"}
    wait_for(lambda: request(broker.url + "/stub/whoami", headers=plain).status == 200, 20,
             what="ann's WebUI over plain http")  # fmt: skip

    tls = {"X-Forwarded-Proto": "https"}  # from now on the proxy in front speaks https
    again = request(
        broker.url + "/stub/whoami",
        headers={"Cookie": f"{SESSION_COOKIE}={ticket}", "Accept": "text/html", **tls},
    )
    assert again.status in (302, 303) and "/_broker/login" in again.location, again.status
    done = login_dev(old, broker, "ann", tls)
    sets = [v for k, v in done.headers if k.lower() == "set-cookie"]
    assert any(v.startswith(HOST_PREFIX + SESSION_COOKIE + "=") and "Secure" in v for v in sets)
    assert any(v.startswith(SESSION_COOKIE + '=""') and "Max-Age=0" in v for v in sets), sets
    assert SESSION_COOKIE not in old.cookies["127.0.0.1"]
    fresh = old.cookies["127.0.0.1"][HOST_PREFIX + SESSION_COOKIE]
    who = request(
        broker.url + "/stub/whoami",
        headers={"Cookie": f"{HOST_PREFIX}{SESSION_COOKIE}={fresh}", **tls},
    )
    assert who.status == 200 and who.json()["user"] == "ann"


def login_dev(
    browser: Browser, broker: Broker, name: str, headers: dict[str, str] | None = None
) -> Response:
    """The dev login form, filled in; the answer to its POST."""
    page = browser.get(broker.url + "/_broker/login", headers or {})
    form = {"csrf_token": _field(page.text), "user": name, "next": "/"}
    done = browser.post(broker.url + "/_broker/login", form, headers or {})
    assert done.status == 302, (done.status, done.text[:300])
    return done


def _field(page: str) -> str:
    return html.unescape(re.search(r'name="csrf_token" value="([^"]*)"', page)[1])


async def test_a_csrf_token_only_opens_forms_of_whom_it_was_made_for(brokers) -> None:
    broker = brokers(SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(broker.url + "/_broker/login") as resp:
            anonymous = _field(await resp.text())  # anybody gets one of these
        form = {"csrf_token": anonymous, "user": "root", "next": "/_broker/healthz"}
        async with http.post(broker.url + "/_broker/login", data=form) as resp:
            assert resp.status == 200
        async with http.get(broker.url + "/_broker/admin") as resp:
            assert resp.status == 200
            console = _field(await resp.text())
        for token, expected in ((anonymous, 403), (console, 200)):  # 200: the new token shown
            async with http.post(
                broker.url + "/_broker/admin/tokens",
                data={"csrf_token": token, "name": "t"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == expected


def test_header_mode_names_admins_by_the_user_header_and_refuses_doubles(brokers) -> None:
    """A proxy that sets X-Forwarded-User but passes the client's X-Forwarded-Email on:
    mallory claiming the admin's email is no admin; two copies of a header are refused."""
    broker = brokers(
        SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32", SDB_ADMIN_USERS="admin@example.com"
    )

    def status(*headers: tuple[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
        conn.putrequest("GET", "/_broker/admin")
        for name, value in headers:  # putheader sends each, duplicates included
            conn.putheader(name, value)
        conn.endheaders()
        code = conn.getresponse().status
        conn.close()
        return code

    assert status(("X-Forwarded-User", "admin@example.com")) == 200
    assert (
        status(("X-Forwarded-User", "mallory"), ("X-Forwarded-Email", "admin@example.com")) == 403
    )
    assert status(("X-Forwarded-User", "admin@example.com"), ("X-Forwarded-User", "mallory")) == 401
