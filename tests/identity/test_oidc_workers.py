"""Revocation reaches every worker at once (SDB_WORKERS=2), not after the session cache's TTL.

Before: a logout on one worker left the other serving the old cookie from its
in-process cache for SDB_SESSION_CACHE_TTL (8-11 of 16 requests got through in
the first 0.1 s). Here the cache lives a minute, so only the published
revocation can explain a prompt 401 from every worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from broker.auth.sessions import SessionStore
from tests.support.procs import Broker, wait_for

from .helpers import Browser, form_field, login, redis_url, request
from .provider import Provider, oidc_broker

ROUNDS = 16  # each on a new connection: SO_REUSEPORT spreads them over both workers


def _broker(start_broker: Callable[..., Broker], provider: Provider) -> Broker:
    return oidc_broker(
        start_broker,
        provider,
        SDB_SESSION_CACHE_TTL="60s",
        SDB_WORKERS="2",
    )


def _statuses(broker: Broker, cookie: dict[str, str]) -> list[int]:
    return [request(broker.url + "/stub/whoami", headers=cookie).status for _ in range(ROUNDS)]


def _over_everywhere(broker: Broker, cookie: dict[str, str]) -> list[int]:
    """Every worker's answers once the event had a moment to arrive (1 s, against a 60 s
    cache): a pub/sub message is not faster than the request that follows it."""
    wait_for(lambda: _statuses(broker, cookie)[-1] == 401, 1, interval=0.02, what="a 401")
    return _statuses(broker, cookie)


def test_logout_ends_the_session_on_every_worker_at_once(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = _broker(start_broker, provider)
    browser = Browser()
    login(browser, broker, "ann")
    cookie = {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}
    assert 401 not in _statuses(broker, cookie)  # both workers now hold it in their cache
    page = browser.get(broker.url + "/_broker/logout")
    out = browser.post(
        broker.url + "/_broker/logout", {"csrf_token": form_field(page.text, "csrf_token")}
    )
    assert out.status == 302
    assert _over_everywhere(broker, cookie) == [401] * ROUNDS


def test_an_admins_revocation_ends_it_on_every_worker_at_once(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = _broker(start_broker, provider)
    browser = Browser()
    login(browser, broker, "carol")
    cookie = {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}
    assert 401 not in _statuses(broker, cookie)

    async def revoke() -> int:
        client = Redis.from_url(redis_url(broker), decode_responses=True)
        try:
            return await SessionStore(client, ttl=3600, cache_ttl=1).revoke_user(
                "carol@partner.org"
            )
        finally:
            await client.aclose()

    assert asyncio.run(revoke()) == 1
    assert _over_everywhere(broker, cookie) == [401] * ROUNDS
