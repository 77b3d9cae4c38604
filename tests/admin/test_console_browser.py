"""The console in Chromium through a real broker: labelled size inputs, a chart legend
that agrees with the table, Reclaim/Delete confirmed with a reason (with scripts on and
off), and figures refreshed in place that pause in a hidden tab and say when they are stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, Request, Route

from tests.admin.support import fleet_file
from tests.support.procs import wait_for

pytestmark = pytest.mark.browser
FIGURES = "/_broker/admin/figures"


def log_in(browser: Browser, base: str, name: str, then: str, *, scripts: bool = True) -> Page:
    page = browser.new_context(java_script_enabled=scripts).new_page()
    page.goto(base + then)
    page.fill("#user", name)
    page.click("#login")
    return page


def set_visibility(page: Page, state: str) -> None:
    """What the browser does when the tab is put in the background (or back)."""
    page.evaluate(
        """state => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_labels_legend_and_confirmed_actions(brokers, tmp_path: Path, browser: Browser) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 3})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    wait_for(lambda: len(broker.pod_records()) >= 2, 20, what="warm pods")
    carol = log_in(browser, broker.url, "carol", then="/")
    carol.wait_for_selector("#pod-id", timeout=30_000)
    root = log_in(browser, broker.url, "root", then="/_broker/admin")
    root.wait_for_selector("#sessions tr.session[data-user=carol]")

    # Each size input has its label: a click on the word focuses the box.
    for name in ("min", "buffer", "max"):
        root.click(f"#sizes-default label[for={name}-default]")
        assert root.evaluate("document.activeElement.id") == f"{name}-default"
    root.get_by_label("buffer", exact=True).fill("1")
    root.locator("#sizes-default button[type=submit]").first.click()
    root.wait_for_selector("#flash.ok")

    # The legend: the table's charted columns, in the table's order, with its colours and
    # its figures; the lines are drawn in those colours.
    heads = root.locator("#fleet tr.counts .swatch")
    table = [(s.get_attribute("data-series") or "", s.evaluate("e => getComputedStyle(e).color"))
             for s in heads.all()]  # fmt: skip
    legend = root.locator("#plan-default .legend .series").all()
    shown = [(s.get_attribute("data-series") or "", s.evaluate("e => getComputedStyle(e).color"))
             for s in legend]  # fmt: skip
    assert table == shown and [n for n, _ in table] == ["warming", "ready", "claimed", "queue"]
    for name, _ in table:
        cell = root.inner_text(f"#profile-default td.{name}")
        number = root.inner_text(f"#plan-default .legend [data-series={name}] .last")
        assert cell == number, name
    assert root.inner_text("#profile-default td.claimed") == "1"
    strokes = root.locator("#plan-default .chart polyline").evaluate_all(
        "lines => lines.map(l => getComputedStyle(l).stroke)"
    )
    assert strokes == [c for _, c in table]

    # Reclaim asks first; the reason and the admin's name are on the list after.
    root.locator("tr.session[data-user=carol] button.reclaim").click()
    root.wait_for_selector("#confirm-form")
    assert "Reclaim the session of carol?" in root.inner_text("#confirm h2")
    root.get_by_label("Reason").fill("tests over")
    root.click("#confirm-button")
    root.wait_for_selector("#flash.ok")
    row = root.locator("#reclaims tr.end").first.inner_text()
    assert "carol" in row and "root" in row and "tests over" in row and "reaper" not in row

    # Scripts off: Delete asks on its own page and works the same.
    plain = log_in(browser, broker.url, "root", then="/_broker/admin", scripts=False)
    plain.wait_for_selector("#pods tr.pod")
    pod = plain.locator("#pods tr.pod:has(button.delete-pod)").first.get_attribute("data-pod")
    plain.locator(f"#pods tr.pod[data-pod='{pod}'] button.delete-pod").click()
    plain.wait_for_selector("#confirm-form")
    plain.fill("#reason", "no scripts")
    plain.click("#confirm-button")
    plain.wait_for_selector("#flash.ok")
    assert f"deleted pod {pod}" in plain.inner_text("#flash")
    assert "pod deleted: no scripts" in plain.inner_text("#events")


def test_figures_refresh_in_place_pause_when_hidden_and_say_when_stale(
    brokers, tmp_path: Path, browser: Browser
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    root = log_in(browser, broker.url, "root", then="/_broker/admin?refresh=1")
    root.wait_for_selector("#fleet")
    dialogs: list[str] = []
    asked: list[str] = []

    def dialog(d: Dialog) -> None:
        dialogs.append(d.message)
        d.dismiss()

    def request(r: Request) -> None:
        if FIGURES in r.url:
            asked.append(r.url)

    root.on("dialog", dialog)
    root.on("request", request)
    root.evaluate("window.notReloaded = true")
    assert root.inner_text("#profile-default td.claimed") == "0"

    # Dana starts a WebUI: the console's figures follow without a reload.
    dana = log_in(browser, broker.url, "dana", then="/")
    dana.wait_for_selector("#pod-id", timeout=30_000)
    root.wait_for_function(
        "document.querySelector('#profile-default td.claimed').textContent === '1'",
        timeout=20_000,
    )
    assert root.locator("#new-rows").is_visible()  # her row needs a reload: it says so
    assert root.evaluate("window.notReloaded") is True

    # A hidden tab asks nothing; shown again, it goes on.
    set_visibility(root, "hidden")
    root.wait_for_timeout(1_500)  # a request in flight when it was hidden may still land
    before = len(asked)
    root.wait_for_timeout(3_000)
    assert len(asked) == before
    set_visibility(root, "visible")
    with root.expect_request(lambda r: FIGURES in r.url, timeout=10_000):
        pass

    # The broker unreachable: a quiet note with the time of the last good figures.
    def refuse(route: Route, request: Request) -> None:
        route.abort()

    root.route(f"**{FIGURES}", refuse)
    root.wait_for_function(
        "document.getElementById('stale').textContent.startsWith('stale since')", timeout=10_000
    )
    assert re.fullmatch(r"stale since \d\d:\d\d:\d\d", root.inner_text("#stale"))
    root.unroute(f"**{FIGURES}", refuse)
    root.wait_for_function("document.getElementById('stale').textContent === ''", timeout=10_000)
    assert dialogs == [] and root.evaluate("window.notReloaded") is True
