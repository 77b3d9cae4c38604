"""The whole OIDC login in a real Chromium: log in, land in your own WebUI, log out,
log in again as someone else (the provider's session ended too, so it asks)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.support.procs import Broker

from .provider import CLIENT_ID, CLIENT_SECRET, Provider

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def broker(start_broker: Callable[..., Broker], provider: Provider) -> Broker:
    return start_broker(
        lambda b: provider.add_client(b.url),
        SDB_AUTH="oidc",
        SDB_OIDC_ISSUER=provider.issuer,
        SDB_OIDC_CLIENT_ID=CLIENT_ID,
        SDB_OIDC_CLIENT_SECRET=CLIENT_SECRET,
    )


def sign_in_at_provider(page: Page, provider: Provider, username: str) -> None:
    page.wait_for_url(provider.issuer + "/authorize*")
    page.fill("#username", username)
    page.click("#op-login")


def whoami(page: Page, broker: Broker) -> dict:
    page.goto(broker.url + "/stub/whoami")
    return json.loads(page.inner_text("body"))


def test_login_logout_and_login_as_another_user(
    broker: Broker, provider: Provider, chromium_path: str
) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path, args=["--no-sandbox", "--disable-background-networking"]
        )
        try:
            page = browser.new_page()
            page.goto(broker.url + "/")
            sign_in_at_provider(page, provider, "ann")
            page.wait_for_url(broker.url + "/")
            page.wait_for_selector("#user")
            assert page.inner_text("#user") == "ann@example.com"
            ann = whoami(page, broker)
            assert ann["user"] == "ann@example.com" and ann["cookies"] == []

            page.goto(broker.url + "/_broker/logout")
            page.click("#logout")
            page.wait_for_url(broker.url + "/_broker/logged-out")
            assert page.inner_text("#title") == "You are logged out"
            assert provider.ended[-1] == "sub-ann"
            page.goto(broker.url + "/stub/whoami")  # no session: back to the provider's form
            sign_in_at_provider(page, provider, "bob")
            page.wait_for_url(broker.url + "/stub/whoami")
            bob = json.loads(page.inner_text("body"))
            assert bob["user"] == "bob@example.com" and bob["pod"] != ann["pod"]
            page.goto(broker.url + "/")
            assert page.inner_text("#user") == "bob@example.com"
        finally:
            browser.close()
