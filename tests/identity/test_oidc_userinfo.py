"""A provider that puts only `sub` in the ID token and serves the rest at userinfo.

OpenID Connect Core 5.4 allows it and panva's certified oidc-provider does it by
default; before, nobody could log in ("did not tell us your email address").
Run with SDB_WORKERS=2, as the broker ships on two cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.procs import Broker

from .helpers import Browser, login
from .provider import Provider, oidc_broker


@pytest.fixture
def userinfo_only(provider: Provider) -> Iterator[Provider]:
    provider.userinfo_only = True
    yield provider
    provider.userinfo_only = False
    provider.userinfo_tamper = {}


@pytest.fixture
def broker(start_broker: Callable[..., Broker], provider: Provider) -> Broker:
    return oidc_broker(
        start_broker,
        provider,
        SDB_ALLOWED_GROUPS="sd-users",
        SDB_WORKERS="2",
    )


def test_claims_only_at_userinfo_still_log_in(broker: Broker, userinfo_only: Provider) -> None:
    browser = Browser()
    assert login(browser, broker, "carol").status == 302
    who = browser.follow(browser.get(broker.url + "/stub/whoami"))
    for _ in range(100):  # a first-time user's WebUI may still be warming
        if who.status == 200:
            break
        who = browser.follow(browser.get(broker.url + "/stub/whoami"))
    assert who.status == 200 and who.json()["user"] == "carol@partner.org"  # email and group


def test_a_userinfo_answer_about_someone_else_is_refused(
    broker: Broker, userinfo_only: Provider
) -> None:
    userinfo_only.userinfo_tamper = {"sub": "sub-ann"}  # carol's token, ann's claims
    browser = Browser()
    landed = browser.follow(login(browser, broker, "carol"))
    assert landed.status in (400, 403)
    assert "did not agree about who you are" in landed.text
    assert "sdb_session" not in browser.cookies.get("127.0.0.1", {})
