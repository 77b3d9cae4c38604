"""Two people, two browsers, two WebUIs: each sees only their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from fleet import slugify
from tests.browser import support
from tests.support.procs import wait_for, write_fleet

pytestmark = pytest.mark.browser


def log_in(browser: Browser, base: str, name: str) -> Page:
    page = support.log_in(browser, base, name)
    page.wait_for_selector("#pod-id", timeout=30_000)  # the wait page refreshes into the WebUI
    return page


def generate(page: Page, prompt: str) -> str:
    page.fill("#prompt", prompt)
    page.click("#generate")
    page.wait_for_selector("body[data-state=done]", timeout=30_000)
    return page.inner_text("#saved-path").strip()


def test_two_users_get_their_own_webuis(brokers, tmp_path: Path, browser: Browser) -> None:
    outputs = tmp_path / "outputs"
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=outputs, buffer=2, max=4, delay=0.5)
    broker = brokers(fleet=fleet, SDB_AUTH="dev")
    wait_for(lambda: len(broker.pod_records()) >= 2, 20, what="warm pods")

    alice = log_in(browser, broker.url, "alice")
    bob = log_in(browser, broker.url, "bob")
    assert alice.inner_text("#user") == "alice"
    assert bob.inner_text("#user") == "bob"
    alice_pod, bob_pod = alice.inner_text("#pod-id"), bob.inner_text("#pod-id")
    assert alice_pod and bob_pod and alice_pod != bob_pod

    alice_file = Path(generate(alice, "a red fox"))
    bob_file = Path(generate(bob, "a blue whale"))
    alice_dir, bob_dir = outputs / slugify("alice"), outputs / slugify("bob")
    assert alice_file.is_file() and alice_file.resolve().is_relative_to(alice_dir.resolve())
    assert bob_file.is_file() and bob_file.resolve().is_relative_to(bob_dir.resolve())
    assert not list(bob_dir.rglob(alice_file.name)) or alice_file.name != bob_file.name
    assert {p.resolve() for p in alice_dir.rglob("*.png")} == {alice_file.resolve()}
    assert {p.resolve() for p in bob_dir.rglob("*.png")} == {bob_file.resolve()}

    # Each browser still reaches only its own pod, and no pod ever sees a broker cookie.
    for page, pod, user in ((alice, alice_pod, "alice"), (bob, bob_pod, "bob")):
        who = json.loads(page.evaluate("() => fetch('/stub/whoami').then(r => r.text())"))
        assert who["pod"] == pod and who["user"] == user
        assert not any(name.startswith("sdb_") for name in who["cookies"])
    # Alice's cookie never reached Bob's pod: Bob's pod only ever saw Bob.
    bob_log = (broker.data_dir / "logs" / f"{bob_pod}.log").read_text()
    assert "alice" not in bob_log
