"""In a real browser: a person waiting for a kind of WebUI that keeps failing to start is
told so while they wait (issue 17, item 2), and the link takes them to another kind.

Before, the page said "A ... WebUI is starting for you" and "no estimate yet" for as long
as they cared to look, while the profile crash-looped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.procs import STUB, wait_for

from .test_browser_wait import log_in

pytestmark = pytest.mark.browser

FLEET = f"""\
backend: local
idle_timeout: 15m
outputs: {{outputs}}
profiles:
  - name: good
    display_name: Good GPU
    buffer: 1
    max: 2
    probe: a1111
    local:
      command: [python, {STUB}, --port, "{{{{port}}}}", --pod-id, "{{{{pod}}}}", --delay, "0.3"]
      stop_grace: 2s
  - name: crash
    display_name: Crashing GPU
    buffer: 0
    max: 1
    probe: a1111
    local:
      command: [{sys.executable}, -c, "import sys; sys.exit(3)", "{{{{port}}}}"]
      stop_grace: 1s
"""


def test_waiting_for_a_failing_kind_says_so_and_offers_another(
    brokers, tmp_path: Path, browser: Browser
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "outputs"))
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")

    # buffer 0: nothing of "crash" starts (or fails) until bob asks for one.
    bob = log_in(browser, broker.url, "bob")
    bob.wait_for_url(lambda url: "/_broker/choose" in url, timeout=10_000)
    bob.click("#profile-crash button.choose")
    bob.wait_for_url(lambda url: "/_broker/wait?next=" in url, timeout=10_000)
    failing = bob.locator("#failing")
    failing.wait_for(state="visible", timeout=30_000)  # told live, as the starts fail
    assert "This kind is failing to start" in failing.inner_text()
    assert "failing to start" in bob.inner_text("#message")
    assert bob.inner_text("#estimate") != "no estimate yet"

    failing.locator("a").click()
    bob.wait_for_url(lambda url: "/_broker/choose" in url, timeout=10_000)
    bob.click("#profile-good button.choose")
    bob.wait_for_selector("#pod-id", timeout=30_000)
    assert bob.inner_text("#user") == "bob" and bob.inner_text("#pod-id").startswith("good-")
