"""In a real browser: with max=1 the second person waits, sees position 1 and a live estimate,
and walks into their own WebUI by themselves when an admin reclaims the first session."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.admin.support import fleet_file
from tests.support.procs import wait_for

pytestmark = pytest.mark.browser


def log_in(browser: Browser, base: str, name: str, then: str = "/") -> Page:
    page = browser.new_context().new_page()
    page.goto(base + then)
    page.fill("#user", name)
    page.click("#login")
    return page


def test_second_person_waits_and_enters_by_themselves(
    brokers, tmp_path: Path, browser: Browser
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 1})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")

    alice = log_in(browser, broker.url, "alice")
    alice.wait_for_selector("#pod-id", timeout=30_000)
    alice_pod = alice.inner_text("#pod-id")

    bob = log_in(browser, broker.url, "bob")
    bob.wait_for_url(lambda url: "/_broker/wait?next=" in url, timeout=10_000)
    assert bob.inner_text("#position") == "1"
    assert "in use" in bob.inner_text("#message")
    estimate = bob.locator("#estimate")
    assert "minutes" in estimate.inner_text()  # alice may idle 15 minutes before she must go
    first = float(estimate.get_attribute("data-left") or 0)
    bob.wait_for_timeout(2_500)
    assert 0 < float(estimate.get_attribute("data-left") or 0) < first  # it counts down, live
    assert bob.locator("#progress").get_attribute("value") is not None

    # An admin reclaims alice's session from the console.
    root = log_in(browser, broker.url, "root", then="/_broker/admin")
    root.wait_for_selector("#sessions")
    root.locator("tr.session[data-user=alice] button.reclaim").click()
    root.click("#confirm-button")  # the confirmation step (a reason is optional)
    root.wait_for_selector("#flash")
    assert "reclaimed the session of alice" in root.inner_text("#flash")
    assert root.locator("tr.session[data-user=alice]").count() == 0
    assert "admin" in root.inner_text("#reclaims")

    # bob's page goes on into his own, fresh WebUI without him doing anything.
    bob.wait_for_selector("#pod-id", timeout=30_000)
    assert bob.inner_text("#user") == "bob"
    assert bob.inner_text("#pod-id") != alice_pod  # single-use: never alice's old pod
    assert bob.url.rstrip("/") == broker.url
