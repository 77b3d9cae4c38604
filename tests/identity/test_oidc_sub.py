"""SDB_OIDC_USER_CLAIM=sub: people keyed on the provider's own id, not their address."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.procs import Broker

from .helpers import Browser, login
from .provider import Provider, oidc_broker


def test_keyed_on_sub_an_unverified_address_logs_in_but_opens_no_allow_list(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = oidc_broker(
        start_broker,
        provider,
        SDB_OIDC_USER_CLAIM="sub",
        SDB_ALLOWED_DOMAINS="example.com",
        SDB_ALLOWED_GROUPS="staff",
    )
    ann = Browser()  # verified ann@example.com, in staff
    assert login(ann, broker, "ann").status == 302
    who = ann.follow(ann.get(broker.url + "/stub/whoami"))
    for _ in range(100):
        if who.status == 200:
            break
        who = ann.follow(ann.get(broker.url + "/stub/whoami"))
    assert who.status == 200
    assert who.json()["user"] == "127.0.0.2/sub-ann" and who.json()["email"] == "ann@example.com"

    dave = Browser()  # dave@example.com, NOT verified: he logs in, but as nobody's address
    assert login(dave, broker, "dave").status == 302
    refused = dave.get(broker.url + "/stub/whoami")
    assert refused.status == 403 and "127.0.0.2/sub-dave" in refused.text
