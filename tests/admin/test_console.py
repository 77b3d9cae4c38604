"""The admin console in a real browser: the fleet, sessions and actions for admins; 403 for
everyone else; a POST without the console's CSRF token changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.admin.support import fleet_file
from tests.support.procs import wait_for

pytestmark = pytest.mark.browser


def log_in(browser: Browser, base: str, name: str, then: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(base + then)
    page.fill("#user", name)
    page.click("#login")
    return page


def test_admin_console_actions_and_who_may_use_them(
    brokers, tmp_path: Path, browser: Browser
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 3})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    wait_for(lambda: len(broker.pod_records()) >= 2, 20, what="warm pods")

    carol = log_in(browser, broker.url, "carol", then="/")
    carol.wait_for_selector("#pod-id", timeout=30_000)

    # Not an admin: 403 on the console, and on every action even with a form in hand.
    refused = carol.goto(broker.url + "/_broker/admin")
    assert refused is not None and refused.status == 403
    assert "Admins only" in carol.inner_text("#title")
    answer = carol.request.post(broker.url + "/_broker/admin/reclaim", form={"user": "carol"})
    assert answer.status == 403

    root = log_in(browser, broker.url, "root", then="/_broker/admin")
    root.wait_for_selector("#sessions tr.session[data-user=carol]")
    assert root.locator("#fleet #profile-default").count() == 1
    assert root.locator("#pods tr.pod").count() >= 3

    # A forged POST (the admin's own cookies, but no token from the console): refused.
    forged = root.request.post(
        broker.url + "/_broker/admin/reclaim", form={"user": "carol", "csrf_token": "forged"}
    )
    assert forged.status == 403
    stale = root.request.post(broker.url + "/_broker/admin/reclaim", form={"user": "carol"})
    assert stale.status == 403
    carol.goto(broker.url + "/")
    assert carol.inner_text("#user") == "carol"  # still her WebUI

    # Sizes for now: shown in force, and validated.
    form = root.locator("#sizes-default")
    form.locator("input[name=min]").fill("5")
    form.locator("button[type=submit]").first.click()
    root.wait_for_selector("#flash.err")
    assert "min (5) is greater than max (3)" in root.inner_text("#flash")
    form = root.locator("#sizes-default")
    form.locator("input[name=buffer]").fill("0")
    form.locator("button[type=submit]").first.click()
    root.wait_for_selector("#flash.ok")
    assert root.inner_text("#profile-default td.sizes") == "0 / 0 / 3"
    assert "override by root" in root.inner_text("#profile-default")

    # An API token is shown once.
    root.fill("#new-token-form input[name=name]", "ci")
    root.click("#new-token-form button")
    assert root.inner_text("#new-token").startswith("sdbt_")
    token_id = root.inner_text("#new-token-id")
    root.goto(broker.url + "/_broker/admin")
    assert root.locator(f"#tokens tr.token[data-id='{token_id}']").count() == 1
    assert root.locator("tr.session[data-user=root]").count() == 0  # looking claims no GPU

    # The admin reclaims carol's session from the console.
    root.locator("tr.session[data-user=carol] button.reclaim").click()
    root.click("#confirm-button")  # the confirmation step (a reason is optional)
    root.wait_for_selector("#flash.ok")
    assert root.locator("tr.session[data-user=carol]").count() == 0
    assert "carol" in root.inner_text("#reclaims")
