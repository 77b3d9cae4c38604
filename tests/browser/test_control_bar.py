"""The person's home, /_broker/, in a real Chromium against a real broker and Redis.

It shows who is logged in and a live idle countdown; "Stop my WebUI" frees the
pod now (Redis holds no claim, the pod is deleted, the next visit gets another
one); a stop without this browser's CSRF token, or posted from another origin
even with a stolen token, frees nothing; "Log out and stop my WebUI" does both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page

from fleet import keys
from tests.browser import support
from tests.support.procs import Broker, wait_for, write_fleet

pytestmark = pytest.mark.browser

#: Another origin (another loopback port) whose page posts a stop form to the broker.
EVIL_FORM = """<!doctype html><title>evil</title>
<form method="post" action="http://127.0.0.1:%d/_broker/stop">
<input type="hidden" name="csrf_token" value="%s"></form>
<script>document.forms[0].submit()</script>"""


@pytest.fixture
def alice(
    brokers, tmp_path: Path, browser: Browser, redis_url: str
) -> Iterator[tuple[Broker, Page, redis.Redis]]:
    """A broker, alice in her WebUI in Chromium, and a Redis client to see the fleet's index."""
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=3)
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    page = support.log_in(browser, broker.url, "alice")
    page.wait_for_selector("#pod-id", timeout=30_000)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield broker, page, client
    finally:
        client.close()


def claimed_pod(client: redis.Redis, user: str) -> str | None:
    return client.hget(keys.claim(user), "pod")


def pod_ids(broker: Broker) -> set[str]:
    return {r["id"] for r in broker.pod_records()}


def test_home_shows_who_and_a_live_idle_countdown(alice) -> None:
    broker, page, _ = alice
    page.goto(broker.url + "/_broker/")
    assert page.text_content("#user") == "alice"
    first = page.text_content("#idle-left")
    assert first and "min" in first  # 15m idle timeout: "14 min 59 s"
    page.wait_for_function(f"document.getElementById('idle-left').textContent !== {first!r}")
    assert page.get_attribute("#gallery", "href") == "/_broker/gallery"
    assert page.get_attribute("#logout", "href") == "/_broker/logout"
    page.focus("#stop")  # a real, keyboard-reachable button
    assert page.evaluate("document.activeElement.id") == "stop"


def test_home_says_generating_and_the_session_limit(alice) -> None:
    broker, page, client = alice
    page.goto(broker.url + "/_broker/")
    assert "min" in (page.text_content("#session-left") or "")  # max_session's default, 12h
    client.hset(keys.BUSY, "alice", claimed_pod(client, "alice") or "")  # as the reaper notes it
    page.reload()
    assert page.text_content("#state").strip().startswith("Generating")
    assert page.query_selector("#idle-left") is None


def test_stop_frees_the_pod_and_the_next_visit_gets_another(alice) -> None:
    broker, page, client = alice
    pod = claimed_pod(client, "alice")
    assert pod
    page.goto(broker.url + "/_broker/")
    page.click("#stop")
    page.wait_for_url("**/_broker/")
    assert page.text_content("#state").strip().startswith("You stopped your WebUI.")
    assert claimed_pod(client, "alice") is None
    wait_for(lambda: pod not in pod_ids(broker), 30, what="the stopped pod deleted")
    # The open tab's polling starts nothing (409); a page load does, with no ended page.
    status = page.evaluate("() => fetch('/stub/whoami').then(r => r.status)")
    assert status == 409
    page.goto(broker.url + "/")
    page.wait_for_selector("#pod-id", timeout=30_000)
    fresh = page.text_content("#pod-id")
    assert fresh and fresh != pod
    assert claimed_pod(client, "alice") == fresh


def test_stop_without_the_csrf_token_is_refused(alice) -> None:
    broker, page, client = alice
    pod = claimed_pod(client, "alice")
    status = page.evaluate(
        "() => fetch('/_broker/stop', {method: 'POST', body: new URLSearchParams({})})"
        ".then(r => r.status)"
    )
    assert status == 403
    assert claimed_pod(client, "alice") == pod


def test_a_stop_posted_from_another_site_is_refused(alice) -> None:
    broker, page, client = alice
    pod = claimed_pod(client, "alice")
    page.goto(broker.url + "/_broker/")
    token = page.get_attribute("input[name=csrf_token]", "value")  # even a leaked token
    body = (EVIL_FORM % (broker.port, token)).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        visit = page.context.new_page()  # same browser, same cookies: alice visits evil
        with visit.expect_response(lambda r: r.url.endswith("/_broker/stop")) as answer:
            visit.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        assert answer.value.status == 403
    finally:
        server.shutdown()
        server.server_close()  # its listening socket
    assert claimed_pod(client, "alice") == pod


def test_log_out_and_stop_frees_the_pod(alice) -> None:
    broker, page, client = alice
    pod = claimed_pod(client, "alice")
    page.goto(broker.url + "/_broker/logout")
    page.click("#logout-stop")
    page.wait_for_url("**/_broker/login*")
    assert claimed_pod(client, "alice") is None
    wait_for(lambda: pod not in pod_ids(broker), 30, what="the stopped pod deleted")
    page.goto(broker.url + "/_broker/")
    assert "/_broker/login" in page.url  # logged out too


def test_plain_log_out_keeps_the_pod(alice) -> None:
    broker, page, client = alice
    pod = claimed_pod(client, "alice")
    page.goto(broker.url + "/_broker/logout")
    page.click("#logout")
    page.wait_for_url("**/_broker/login*")
    assert claimed_pod(client, "alice") == pod
