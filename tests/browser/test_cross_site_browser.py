"""In a real Chromium: another site cannot drive alice's WebUI, and her WebUI cannot
replace her broker session with a cookie of its own.

The "other site" is a page on another loopback port. Ports do not make another
site (a site is scheme and host), so Chromium sends alice's SameSite=Lax session
cookie with its WebSocket handshake: exactly the cross-site WebSocket hijacking
a page on a sibling subdomain could do to a real deployment.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import support
from tests.support.procs import Broker, wait_for, write_fleet

pytestmark = pytest.mark.browser

EVIL_PAGE = """<!doctype html><title>evil</title><script>
const ws = new WebSocket("ws://127.0.0.1:%d/stub/ws-echo");
ws.onopen = () => { ws.send("hijacked"); };
ws.onmessage = (e) => { document.title = "open: " + e.data; };
ws.onerror = () => { document.title = "refused"; };
</script>"""


def serve(body: str) -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def alice(brokers, tmp_path: Path, browser: Browser) -> tuple[Broker, Page]:
    """A broker, and alice logged in to her WebUI in Chromium."""
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    alice = support.log_in(browser, broker.url, "alice")
    alice.wait_for_selector("#pod-id", timeout=30_000)
    return broker, alice


def test_another_site_cannot_open_alices_webui_websocket(alice: tuple[Broker, Page]) -> None:
    broker, page = alice
    # Her own page may: the same WebSocket from the broker's origin works.
    own = page.evaluate(
        """() => new Promise((ok) => {
            const ws = new WebSocket(location.origin.replace("http", "ws") + "/stub/ws-echo");
            ws.onopen = () => ws.send("mine");
            ws.onmessage = (e) => ok("open: " + e.data);
            ws.onerror = () => ok("refused");
        })"""
    )
    assert own == "open: mine"
    evil = serve(EVIL_PAGE % broker.port)
    try:
        visit = page.context.new_page()  # same browser, same cookies: alice visits evil
        visit.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        visit.wait_for_function("document.title !== 'evil'", timeout=15_000)
        assert visit.title() == "refused"
    finally:
        evil.shutdown()
        evil.server_close()  # its listening socket


def test_a_webui_cannot_replace_the_brokers_session_cookie(alice: tuple[Broker, Page]) -> None:
    broker, page = alice
    page.goto(broker.url + "/stub/set-cookie?sdb_session=forged&sdb_csrf=forged&theme=dark")
    cookies = {c["name"]: c["value"] for c in page.context.cookies(broker.url)}
    assert cookies["theme"] == "dark"  # the WebUI's own cookies work as before
    assert cookies.get("sdb_session") not in (None, "forged")
    assert cookies.get("sdb_csrf") != "forged"
    who = json.loads(page.evaluate("() => fetch('/stub/whoami').then(r => r.text())"))
    assert who["user"] == "alice"  # still logged in, as herself
