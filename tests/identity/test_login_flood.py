"""An anonymous flood of GET /_broker/login (oidc) cannot fill Redis: a cap per client."""

from __future__ import annotations

from collections.abc import Callable

import redis

from fleet import keys
from tests.support.procs import Broker

from .helpers import redis_url, request
from .provider import Provider, oidc_broker

LOGINS_PER_CLIENT = 12  # the default is 300: an office behind one NAT address


def test_a_login_flood_from_one_address_is_capped(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = oidc_broker(
        start_broker,
        provider,
        warm=False,
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_LOGINS_PER_CLIENT=str(LOGINS_PER_CLIENT),
    )
    statuses = [
        request(broker.url + "/_broker/login").status for _ in range(LOGINS_PER_CLIENT + 20)
    ]
    assert statuses[:LOGINS_PER_CLIENT] == [302] * LOGINS_PER_CLIENT
    assert set(statuses[LOGINS_PER_CLIENT:]) == {429}
    client = redis.Redis.from_url(redis_url(broker))
    try:
        assert len(client.keys(keys.login("*"))) == LOGINS_PER_CLIENT  # not one more stored
    finally:
        client.close()
    # Another browser behind the same trusted proxy is another client: it may log in.
    other = request(broker.url + "/_broker/login", headers={"X-Forwarded-For": "203.0.113.9"})
    assert other.status == 302
