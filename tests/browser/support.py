"""The dev login as a person does it, in a fresh browser context."""

from __future__ import annotations

from playwright.sync_api import Browser, Page


def log_in(browser: Browser, base: str, name: str, path: str = "/") -> Page:
    """Open `path` logged out, land on the login page, log in as `name`: the page
    is then on its way back to `path` (the caller waits for what it expects)."""
    page = browser.new_context().new_page()
    page.goto(base + path)
    assert "/_broker/login" in page.url  # not logged in: sent to the login page
    page.fill("#user", name)
    page.click("#login")
    return page
