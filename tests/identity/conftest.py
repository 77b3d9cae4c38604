"""Fixtures of the identity suite: one provider, one IAP key server, one Redis, shared.

Brokers here are module-scoped (each costs a process start and a warm fleet),
on a Redis server of their own so the per-test flush of the rest of the suite
never pulls their state away mid-module.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from unittest import mock

import pytest
import redis

from fleet import keys
from tests.support import procs
from tests.support.procs import Broker, RedisServer, http_ok, kill_pods, wait_for, write_fleet

from .iap_keys import IapKeys
from .provider import Provider


@pytest.fixture(scope="package")
def identity_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("identity-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def provider() -> Iterator[Provider]:
    op = Provider().start()
    op.add_user("ann", "ann@example.com", groups=("staff",))
    op.add_user("bob", "Bob@Example.com")
    op.add_user("carol", "carol@partner.org", groups=("sd-users",))
    op.add_user("frank", "frank@partner.org", groups=("other",))
    op.add_user("dave", "dave@example.com", email_verified=False)
    op.add_user("eve", "eve@evil.org")
    yield op
    op.stop()


@pytest.fixture(scope="package")
def iap_keys() -> Iterator[IapKeys]:
    server = IapKeys().start()
    yield server
    server.stop()


_databases = itertools.count()  # brokers get databases 1-15; 0 is for store tests


@pytest.fixture(scope="module")
def start_broker(
    tmp_path_factory: pytest.TempPathFactory, identity_redis: RedisServer
) -> Iterator[Callable[..., Broker]]:
    """Start brokers for one module, each on a Redis database of its own (see `redis_url`);
    `before_start(broker)` may register the broker's URL (with the provider) first."""
    started: list[Broker] = []

    def start(before_start: Callable[[Broker], None] | None = None, warm: bool = True,
              **env: str) -> Broker:  # fmt: skip
        tmp = tmp_path_factory.mktemp("broker")
        fleet = write_fleet(tmp / "fleet.yaml", outputs=tmp / "outputs", buffer=2, max=5)
        url = identity_redis.url.rsplit("/", 1)[0] + f"/{1 + next(_databases) % 15}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        broker = Broker(tmp / "data", fleet, url, **env)
        if before_start:
            before_start(broker)
        started.append(broker)
        # In iap mode readyz wants a token like every page but healthz: wait on healthz.
        healthz = lambda url: http_ok(url.replace("/_broker/readyz", "/_broker/healthz"))  # noqa: E731
        try:
            with mock.patch.object(procs, "http_ok", healthz):
                broker.start()
            if warm:
                wait_for(lambda: client.zcard(keys.ready("default")) >= 2, 20, what="warm pods")
        finally:
            client.close()
        return broker

    yield start
    for broker in started:
        broker.kill()
        kill_pods(broker.data_dir)
