"""oidc mode: "Log out and stop my WebUI" ends the broker's login, the provider's, and the
claim; the GPU goes back now, not after idle_timeout."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from tests.support.procs import Broker, wait_for

from .helpers import Browser, claims_in_redis, form_field, login, redis_url, request
from .provider import Provider, oidc_broker


def test_log_out_and_stop_ends_the_provider_session_and_the_claim(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = oidc_broker(start_broker, provider)
    browser = Browser()
    login(browser, broker, "ann")
    ticket = browser.cookies["127.0.0.1"]["sdb_session"]
    browser.follow(browser.get(broker.url + "/stub/whoami")).json()
    wait_for(lambda: claims_in_redis(redis_url(broker)) == ["ann@example.com"], 20, what="claim")
    page = browser.get(broker.url + "/_broker/logout")
    assert 'id="logout-stop"' in page.text
    token = form_field(page.text, "csrf_token")
    out = browser.post(broker.url + "/_broker/stop", {"csrf_token": token, "then": "logout"})
    assert out.status == 302 and out.location.startswith(provider.issuer + "/end-session")
    assert urlsplit(browser.follow(out).url).path == "/_broker/logged-out"
    assert provider.ended[-1] == "sub-ann"
    assert claims_in_redis(redis_url(broker)) == []
    assert request(broker.url + "/", headers={"Cookie": f"sdb_session={ticket}"}).status == 401
