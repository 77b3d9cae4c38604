"""Client-sent identity headers stay dropped in dev and header modes (iap and oidc check
the same in their own modules, on their own brokers)."""

from __future__ import annotations

from collections.abc import Callable

from broker.security.signing import Signer
from tests.support.procs import Broker

from .helpers import assert_spoofs_dropped, request, websocket_status


def test_dev_mode(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(SDB_AUTH="dev")
    cookie = Signer(b"test-secret-shared-by-all-brokers").sign(
        "session", {"u": "ann", "e": "", "g": []}
    )
    assert_spoofs_dropped(broker, {"Cookie": f"sdb_session={cookie}"}, "ann")


def test_header_mode_behind_a_trusted_proxy(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker(SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    legit = {"X-Forwarded-User": "ann", "X-Forwarded-Email": "ann@example.com"}
    assert_spoofs_dropped(broker, legit, "ann", except_for=legit)


def test_header_mode_from_an_untrusted_peer(start_broker: Callable[..., Broker]) -> None:
    """The proxy's own header means nothing from anyone else (here: no trusted proxies)."""
    broker = start_broker(warm=False, SDB_AUTH="header", SDB_TRUSTED_PROXIES="10.0.0.0/8")

    forged = {"X-Forwarded-User": "ann", "X-Forwarded-Email": "ann@example.com"}
    assert request(broker.url + "/stub/whoami", headers=forged).status == 401
    assert websocket_status(broker.url + "/stub/ws-echo", headers=forged) == 401
