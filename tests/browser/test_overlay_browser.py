"""The broker's bar in the WebUI's own page, in a real Chromium against a real broker, the
stub WebUI and Redis (issue 19 §4): it shows who is logged in, the idle and session time
left (a banner in max_session's last 10 minutes), links to the home page, stays visible
under a WebUI stylesheet that hides every element, and holds the presence stream: the
person's open tabs in Redis are 1 while the page is open and 0 once it closes, although
the stub page itself, like A1111's, keeps no connection open while idle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser

from tests.browser import support
from tests.browser.test_presence_page import tabs_open
from tests.support.procs import STUB, wait_for

pytestmark = pytest.mark.browser

FLEET = """\
backend: local
idle_timeout: 15m
outputs: {outputs}
profiles:
  - name: default
    buffer: 1
    max: 2
    probe: a1111
    max_session: 9m
    overlay: true
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3"]
      stop_grace: 3s
"""
BAR = "#sdb-overlay .bar"  # Playwright's CSS pierces the bar's open shadow root


def test_the_bar_shows_the_person_and_their_clock_survives_the_webui_css_and_holds_presence(
    brokers, tmp_path: Path, browser: Browser, redis_url: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out", stub=STUB))
    # Presence counts reach Redis at each activity flush (default 10 s).
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ACTIVITY_FLUSH="0.3s")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    page = support.log_in(browser, broker.url, "alice")
    page.wait_for_selector("#pod-id", timeout=30_000)  # the stub WebUI's own page
    bar = page.locator(BAR)
    bar.locator("#idle").filter(has_text="left").wait_for(timeout=15_000)
    assert bar.locator("#user").inner_text() == "alice"
    text = bar.inner_text()
    assert re.search(r"idle: 1[45] min left", text), text
    assert re.search(r"Your session ends in [89] min", text), text  # under 10 min: a banner
    assert "banner" in (bar.get_attribute("class") or "")

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # A WebUI page whose stylesheet hides every element: the bar still shows.
        page.goto(broker.url + "/stub/page?hide=1")
        page.locator(BAR + " #user").filter(has_text="alice").wait_for(timeout=15_000)
        assert not page.locator("#page").is_visible()
        assert bar.is_visible() and page.locator(BAR + " #home").is_visible()
        wait_for(lambda: tabs_open(client, "alice") == 1, 15, what="the bar's presence stream")
        page.close()
        wait_for(lambda: tabs_open(client, "alice") == 0, 15, what="the closed page's absence")

        # Its link reaches the home page, with the levers.
        again = page.context.new_page()
        again.goto(broker.url + "/")
        again.locator(BAR + " #home").click()
        again.wait_for_url(broker.url + "/_broker/")
        assert again.locator("#user").inner_text() == "alice"
        assert again.locator("#stop").is_visible()
    finally:
        client.close()
