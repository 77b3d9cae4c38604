"""Plain HTTP for the identity tests: headers sent exactly as given, redirects by hand.

`Browser` keeps cookies per host the way a browser would (well enough for
these flows) and lets a test drop, keep or replay any of them.
"""

from __future__ import annotations

import html
import http.client
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import redis

from fleet import keys
from tests.support.procs import Broker

Headers = dict[str, str] | Iterable[tuple[str, str]]


@dataclass
class Response:
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def location(self) -> str:
        return urljoin(self.url, self.header("Location") or "")

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> dict:
        return json.loads(self.body)


def request(
    url: str, method: str = "GET", headers: Headers = (), body: bytes | None = None
) -> Response:
    """One request, no redirects followed; repeated and odd header names go out as given."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.putrequest(method, target, skip_accept_encoding=True)
        pairs = headers.items() if isinstance(headers, dict) else headers
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(url, resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def websocket_status(url: str, headers: Headers = ()) -> int:
    """The status a WebSocket upgrade gets: 101 only when the broker let it through."""
    pairs = list(headers.items() if isinstance(headers, dict) else headers)
    return request(url, headers=[*UPGRADE.items(), *pairs]).status


class Browser:
    """Cookies per host (ports share them, as in browsers), HTML accepted."""

    def __init__(self) -> None:
        self.cookies: dict[str, dict[str, str]] = defaultdict(dict)

    def _send(self, url: str, method: str, body: bytes | None, headers: Headers) -> Response:
        host = urlsplit(url).hostname or ""
        out = [("Accept", "text/html")]
        if self.cookies[host]:
            out.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies[host].items())))
        if body is not None:
            out.append(("Content-Type", "application/x-www-form-urlencoded"))
        pairs = headers.items() if isinstance(headers, dict) else headers
        resp = request(url, method, [*out, *pairs], body)
        for name, value in resp.headers:
            if name.lower() == "set-cookie":
                for morsel in SimpleCookie(value).values():
                    if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                        self.cookies[host].pop(morsel.key, None)
                    else:
                        self.cookies[host][morsel.key] = morsel.value
        return resp

    def get(self, url: str, headers: Headers = ()) -> Response:
        return self._send(url, "GET", None, headers)

    def post(self, url: str, form: dict[str, str], headers: Headers = ()) -> Response:
        return self._send(url, "POST", urlencode(form).encode(), headers)

    def follow(self, resp: Response, hops: int = 10) -> Response:
        while resp.status in (301, 302, 303, 307) and hops:
            resp = self.get(resp.location)
            hops -= 1
        return resp


def form_field(page: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page)
    assert found, f"no field {name} in {page[:500]}"
    return html.unescape(found.group(1))


def authorize(browser: Browser, broker: Broker, username: str | None, next_: str = "/") -> Response:
    """Start a login at the broker and get through the provider; returns the redirect to
    the broker's callback (not yet followed)."""
    start = browser.get(broker.url + "/_broker/login?" + urlencode({"next": next_}))
    assert start.status == 302, (start.status, start.text[:300])
    page = browser.get(start.location)
    if page.status == 200 and username is not None:  # the provider's login form
        page = browser.post(
            urljoin(page.url, "/authorize"), {"q": form_field(page.text, "q"), "username": username}
        )
    assert page.status == 302 and "/_broker/callback" in page.location, (
        page.status,
        page.text[:300],
    )
    return page


def login(browser: Browser, broker: Broker, username: str | None, next_: str = "/") -> Response:
    """The whole login; returns the callback's answer (a redirect to `next` on success)."""
    return browser.get(authorize(browser, broker, username, next_).location)


def redis_url(broker: Broker) -> str:
    """The broker's own Redis database (each identity-suite broker has one)."""
    return broker.env["SDB_REDIS_URL"]


def claims_in_redis(url: str) -> list[str]:
    """Users holding a pod, straight from Redis."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(
            k.removeprefix(keys.CLAIM_PREFIX) for k in client.scan_iter(keys.CLAIM_PREFIX + "*")
        )
    finally:
        client.close()


def redis_keys(url: str, pattern: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(pattern))
    finally:
        client.close()


def pod_log_lines(data_dir: Path, marker: str) -> list[str]:
    """Lines of every pod's access log that mention `marker` (a request that reached a WebUI)."""
    lines = []
    for log in (data_dir / "logs").glob("*.log"):
        lines += [line for line in log.read_text(errors="replace").splitlines() if marker in line]
    return lines


#: Identity headers a client might send, in the spellings that slip past naive filters.
SPOOFS = [
    "X-Forwarded-User",
    "x-forwarded-user",
    "X-FORWARDED-USER",
    "X_Forwarded_User",
    "x_forwarded_user",
    "X-Forwarded-Email",
    "X_FORWARDED_EMAIL",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Forwarded-Access-Token",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X_Auth_Request_Groups",
    "X-Remote-User",
    "Remote-User",
    "remote_user",
    "X-User",
    "X-Email",
    "X-Webauth-User",
    "X-Sdbroker-User",
    "X-Sdbroker-Admin",
    "X-Goog-Authenticated-User-Email",
    "X-Goog-Authenticated-User-Id",
    "x-goog-iap-jwt-assertion",
    "X_Goog_Iap_Jwt_Assertion",
]
MALLORY = "mallory@evil.example"


def spoofs(except_for: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Every spoof but the exact (dash-spelt) headers this mode itself reads."""
    skip = {h.lower() for h in except_for}
    return [(name, MALLORY) for name in SPOOFS if name.lower() not in skip]


def assert_spoofs_dropped(
    broker: Broker, legit: Headers, user: str, except_for: Iterable[str] = ()
) -> None:
    """With real credentials plus every spoof, the pod sees the real user and no spoof;
    with the spoofs alone, nobody gets in (HTTP or WebSocket)."""
    forged = spoofs(except_for)
    pairs = list(legit.items() if isinstance(legit, dict) else legit)
    me = request(broker.url + "/stub/whoami", headers=[*pairs, *forged])
    assert me.status == 200 and me.json()["user"] == user, (me.status, me.text[:200])
    seen = request(broker.url + "/stub/echo-headers", headers=[*pairs, *forged]).json()
    assert MALLORY not in json.dumps(seen), seen
    assert not [
        h for h in seen if "_" in h or h.startswith(("x-goog-", "x-auth-request-", "remote"))
    ]
    assert request(broker.url + "/stub/whoami?spoof-only", headers=forged).status == 401
    assert websocket_status(broker.url + "/stub/ws-echo?spoof-only", headers=forged) == 401
    assert pod_log_lines(broker.data_dir, "spoof-only") == []


#: `next` values that must never take anyone off the broker's origin.
OPEN_REDIRECTS = [
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%252F%252Fevil.example",
    "/%5Cevil.example",
    " //evil.example",
    "//evil.example ",
    "/\t/evil.example",
    "/\r\nLocation: https://evil.example",
    "//\u3002evil.example",
    "evil.example",
    "@evil.example",
    "/%09/evil.example",
    "///evil.example",
]
