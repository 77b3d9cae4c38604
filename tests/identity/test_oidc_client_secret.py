"""A client secret with characters form-encoding changes (`+`, `%`, `:`, `/`) works, in
both token-endpoint authentications. Before, every login failed with invalid_client
against providers that decode Basic credentials as RFC 6749 2.3.1 says, and the error
page blamed "the code may be used up"."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.procs import Broker

from .helpers import Browser, login
from .provider import Provider

ODD_ID = "sdbroker+odd"
ODD_SECRET = "s3cr+t/with:odd%2Bchars and space"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_an_odd_client_secret_logs_in(
    start_broker: Callable[..., Broker], provider: Provider, method: str
) -> None:
    broker = start_broker(
        lambda b: provider.add_client(b.url, ODD_ID, ODD_SECRET),
        warm=False,
        SDB_AUTH="oidc",
        SDB_OIDC_ISSUER=provider.issuer,
        SDB_OIDC_CLIENT_ID=ODD_ID,
        SDB_OIDC_CLIENT_SECRET=ODD_SECRET,
        SDB_OIDC_TOKEN_AUTH=method,
    )
    assert login(Browser(), broker, "ann").status == 302  # into the broker, logged in


def test_a_wrong_secret_says_whose_fault_it_is(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = start_broker(
        lambda b: provider.add_client(b.url, ODD_ID, ODD_SECRET),
        warm=False,
        SDB_AUTH="oidc",
        SDB_OIDC_ISSUER=provider.issuer,
        SDB_OIDC_CLIENT_ID=ODD_ID,
        SDB_OIDC_CLIENT_SECRET="not-the-secret",
    )
    refused = login(Browser(), broker, "ann")
    assert refused.status == 400
    assert "did not accept this site" in refused.text and "used up" not in refused.text
