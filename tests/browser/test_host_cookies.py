"""In a real Chromium, through the real broker: its cookies are `__Host-` and Secure
when its public origin is https, and a WebUI can plant neither the prefixed nor the
plain name of one; on plain http (the loopback demo) plain names keep logging in.

The https broker sits behind a TLS front (tests/browser/tls.py), as behind a load
balancer. Before (issue 16) the cookies were `sdb_session` etc. on https too, which a
sibling subdomain can set for the whole domain (cookie tossing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, BrowserContext

from broker.security.cookies import CSRF_COOKIE, HOST_PREFIX, SESSION_COOKIE
from tests.support.procs import Broker, wait_for, write_fleet

from .tls import TlsFront

pytestmark = pytest.mark.browser

SECURE = quote("; Secure")  # the stub writes each value as given, attributes included


def plant(context: BrowserContext, base: str) -> dict[str, dict]:
    """A WebUI's Set-Cookie of every name of the session cookie, and two of its own;
    returns the browser's cookies afterwards, by name."""
    page = context.new_page()
    query = "&".join(
        [
            f"{HOST_PREFIX}{SESSION_COOKIE}=forged{SECURE}",
            f"__HOST-SDB_SESSION=forged{SECURE}",
            f"{SESSION_COOKIE}=forged",
            f"{HOST_PREFIX}{CSRF_COOKIE}=forged{SECURE}",
            "theme=dark",
            f"{HOST_PREFIX}theirs=1{SECURE}",
        ]
    )
    page.goto(f"{base}/stub/set-cookie?{query}")
    assert len(json.loads(page.inner_text("body"))["set"]) == 6  # the pod sent all six
    return {c["name"]: c for c in context.cookies(base)}


def log_in(context: BrowserContext, base: str, name: str) -> None:
    page = context.new_page()
    page.goto(base + "/")
    assert "/_broker/login" in page.url
    page.fill("#user", name)
    page.click("#login")
    page.wait_for_selector("#pod-id", timeout=30_000)


def whoami(context: BrowserContext, base: str) -> str:
    page = context.new_page()
    page.goto(base + "/stub/whoami")
    return json.loads(page.inner_text("body"))["user"]


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    return write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)


@pytest.fixture
def https_broker(brokers, fleet: Path, tmp_path: Path) -> Iterator[tuple[Broker, TlsFront]]:
    holder: list[Broker] = []
    front = TlsFront(tmp_path, target=lambda: holder[0].port).start()
    try:
        broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_PUBLIC_URL=front.url)
        holder.append(broker)
        wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
        yield broker, front
    finally:
        front.stop()


def test_on_https_the_cookies_are_host_prefixed_and_a_webui_cannot_plant_one(
    https_broker: tuple[Broker, TlsFront], browser: Browser
) -> None:
    _, front = https_broker
    context = browser.new_context(ignore_https_errors=True)
    log_in(context, front.url, "alice")
    cookies = {c["name"]: c for c in context.cookies(front.url)}
    session = cookies[HOST_PREFIX + SESSION_COOKIE]
    assert session["secure"] and session["httpOnly"] and session["path"] == "/"
    assert session["domain"] == "127.0.0.1"  # host-only: no Domain attribute
    assert session["sameSite"] == "Lax"
    assert SESSION_COOKIE not in cookies and CSRF_COOKIE not in cookies  # no plain names
    assert cookies[HOST_PREFIX + CSRF_COOKIE]["secure"]

    after = plant(context, front.url)
    assert after["theme"]["value"] == "dark"  # the WebUI's own cookies work
    assert after[HOST_PREFIX + "theirs"]["secure"]  # Chromium takes a pod's __Host- cookie
    assert after[HOST_PREFIX + SESSION_COOKIE]["value"] == session["value"]  # not "forged"
    assert after[HOST_PREFIX + CSRF_COOKIE]["value"] != "forged"
    assert SESSION_COOKIE not in after and "__HOST-SDB_SESSION" not in after
    assert whoami(context, front.url) == "alice"  # still logged in, as herself
    context.close()


def test_on_plain_http_the_cookies_keep_their_plain_names(
    brokers, fleet: Path, browser: Browser
) -> None:
    """Loopback http: `sdb_session`, not Secure, so every browser keeps it. Chromium 156
    itself would keep a Secure `__Host-` cookie from http://127.0.0.1 (the WebUI's own
    `__Host-theirs` below), treating loopback as a secure origin; not every browser does."""
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    context = browser.new_context()
    log_in(context, broker.url, "bob")
    cookies = {c["name"]: c for c in context.cookies(broker.url)}
    assert not cookies[SESSION_COOKIE]["secure"] and HOST_PREFIX + SESSION_COOKIE not in cookies

    after = plant(context, broker.url)
    assert after[HOST_PREFIX + "theirs"]["secure"]  # what Chromium does on http loopback
    assert after[SESSION_COOKIE]["value"] == cookies[SESSION_COOKIE]["value"]
    assert HOST_PREFIX + SESSION_COOKIE not in after and "__HOST-SDB_SESSION" not in after
    assert HOST_PREFIX + CSRF_COOKIE not in after
    assert whoami(context, broker.url) == "bob"
    context.close()
