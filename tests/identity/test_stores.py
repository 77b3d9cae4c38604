"""The key cache and the session store on their own, with a clock the test moves."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from redis.asyncio import Redis

from broker.auth.jwks import JWKSCache, TokenRejected, essential, verify
from broker.auth.sessions import PendingLogins, SessionStore, digest, new_secret, unseal
from broker.identity import Identity
from fleet import keys
from tests.support.clock import StepClock
from tests.support.procs import RedisServer

from .servers import ThreadedServer


class KeyServer:
    """A JWKS endpoint whose keys (and failures) the test changes."""

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        self.hits = 0
        self.broken = False
        app = web.Application()
        app.router.add_get("/jwks", self.jwks)
        self.http = ThreadedServer(app)

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.broken:
            return web.Response(status=500)
        return web.json_response(
            {"keys": [{**k.as_dict(private=False), "kid": kid} for kid, k in self.keys.items()]}
        )

    def add(self, kid: str, key: Key | None = None) -> Key:
        self.keys[kid] = key = key or ECKey.generate_key("P-256", private=True)
        return key


# Long and distinctive: a two-letter token turned up by chance in the base64 of the
# sealed blob about once in forty runs.
REFRESH_TOKEN = "refresh-token-of-ann-7f3a9c"


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    server.http.start()
    yield server
    server.http.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Clock(StepClock):
    def __init__(self) -> None:
        super().__init__(1000.0)


async def test_unknown_kid_refetches_at_most_every_30s_and_rotation_works(
    key_server: KeyServer, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    cache = JWKSCache(key_server.http.url + "/jwks", ttl=3600, clock=clock)
    first = key_server.add("k1")
    assert await cache.key(http, "k1") is not None and key_server.hits == 1
    for _ in range(20):
        assert await cache.key(http, "nope") is None
    assert key_server.hits == 1  # a flood of unknown kids: no fetch inside the 30 s
    key_server.add("k2")  # the provider rotates
    clock.now += 29
    assert await cache.key(http, "k2") is None and key_server.hits == 1
    clock.now += 1
    assert await cache.key(http, "k2") is not None and key_server.hits == 2
    assert await cache.key(http, "nope") is None and key_server.hits == 2
    # A failing endpoint keeps the keys we had.
    key_server.broken = True
    clock.now += 3600
    assert (await cache.key(http, "k1")).thumbprint() == first.thumbprint()
    assert key_server.hits == 3


async def test_verify_picks_the_key_by_kid_and_refuses_what_does_not_fit(
    key_server: KeyServer, http: aiohttp.ClientSession
) -> None:
    cache = JWKSCache(key_server.http.url + "/jwks", ttl=3600)
    ec = key_server.add("ec")
    rsa = key_server.add("rsa", RSAKey.generate_key(2048, private=True))
    key_server.add("p384", ECKey.generate_key("P-384", private=True))
    now = int(time.time())
    claims = {"iss": "i", "aud": "a", "iat": now, "exp": now + 60}
    rules = {"iss": essential("i"), "aud": essential("a"), "exp": essential(), "iat": essential()}

    def token(key: Key, alg: str, **header: object) -> str:
        return jwt.encode({"alg": alg, **header}, claims, key, algorithms=[alg])

    good = token(ec, "ES256", kid="ec")
    assert (await verify(good, cache, http, algorithms=["ES256"], claims=rules))["aud"] == "a"
    cases = {
        "RSA key named by an ES256 token": token(ec, "ES256", kid="rsa"),
        "P-384 key named by an ES256 token": token(ec, "ES256", kid="p384"),
        "RS256 where only ES256 is accepted": token(rsa, "RS256", kid="rsa"),
        "no kid when one is required": token(ec, "ES256"),
        "another audience": jwt.encode(
            {"alg": "ES256", "kid": "ec"}, {**claims, "aud": "b"}, ec, algorithms=["ES256"]
        ),
    }
    for name, forged in cases.items():
        with pytest.raises(TokenRejected):
            await verify(forged, cache, http, algorithms=["ES256"], claims=rules)
            pytest.fail(name)


@pytest.fixture
async def store_redis(identity_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(identity_redis.url.rsplit("/", 1)[0] + "/0", decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def test_sessions_live_under_the_hash_of_their_ticket(store_redis: Redis) -> None:
    clock = Clock()
    store = SessionStore(store_redis, ttl=3600, cache_ttl=5, clock=clock)
    ann = Identity(user="ann@example.com", email="ann@example.com", groups=("g",), sub="s1")
    ticket = await store.create(ann, id_token="tok")
    assert len(ticket) == 43 and await store_redis.exists(keys.session(digest(ticket)))
    assert not [k async for k in store_redis.scan_iter(f"*{ticket}*")]
    session = await store.get(ticket)
    assert session is not None and session.identity == ann and session.id_token == "tok"
    assert 3590 < await store_redis.ttl(keys.session(session.id)) <= 3600
    assert await store.get("x" * 43) is None and await store.get("not a ticket") is None
    # A new login replaces the browser's old session.
    second = await store.create(ann, replaces=ticket)
    assert await store.get(ticket) is None and await store.get(second) is not None
    # Expiry is checked even if Redis has not dropped the key yet.
    clock.now += 3601
    assert await store.get(second) is None


async def test_revocation_is_immediate_here_and_within_the_cache_ttl_elsewhere(
    store_redis: Redis,
) -> None:
    clock = Clock()
    here = SessionStore(store_redis, ttl=3600, cache_ttl=5, clock=clock)
    elsewhere = SessionStore(store_redis, ttl=3600, cache_ttl=5, clock=clock)
    bob = Identity(user="bob@example.com")
    one, two = await here.create(bob), await here.create(bob)
    assert await elsewhere.get(one) is not None
    assert {s.id for s in await here.sessions_of(bob.user)} == {digest(one), digest(two)}
    assert await here.revoke(digest(one))
    assert await here.get(one) is None
    assert await elsewhere.get(one) is not None  # cached for up to cache_ttl...
    clock.now += 5
    assert await elsewhere.get(one) is None  # ...then gone
    assert await here.revoke_user(bob.user) == 1
    assert await here.get(two) is None and await here.sessions_of(bob.user) == []


async def test_a_refresh_is_claimed_once_and_never_brings_a_session_back(
    store_redis: Redis,
) -> None:
    """Two workers due at once: one asks the provider. The provider's tokens open only
    with the ticket; an update after a revocation stores nothing."""
    now = [1000.0]
    one = SessionStore(store_redis, ttl=3600, cache_ttl=60, clock=lambda: now[0])
    two = SessionStore(store_redis, ttl=3600, cache_ttl=60, clock=lambda: now[0])
    ticket = await one.create(
        Identity(user="ann", groups=("a",)), tokens={"refresh": REFRESH_TOKEN}
    )
    first, second = await one.get(ticket), await two.get(ticket)
    assert first and second and first.checked == 1000.0
    assert REFRESH_TOKEN not in json.dumps(await store_redis.hgetall(keys.session(first.id)))
    assert unseal(ticket, first.tokens) == {"refresh": REFRESH_TOKEN}
    assert unseal(new_secret(), first.tokens) == {}
    now[0] = 2000.0
    assert [await one.claim_refresh(first, 2000.0), await two.claim_refresh(second, 2000.0)] == [
        True,
        False,
    ]
    later = await one.update(first, ticket, checked=2000.0, identity=Identity(user="ann"))
    assert later and later.identity.groups == () and later.checked == 2000.0
    await two.revoke(later.id)
    assert await one.update(later, ticket, checked=3000.0, tokens={}) is None
    assert not await one.claim_refresh(later, 3000.0)
    assert not await store_redis.exists(keys.session(later.id))


async def test_a_pending_login_is_taken_once(store_redis: Redis) -> None:
    pending = PendingLogins(store_redis, ttl=600)
    await pending.put("state-1", {"n": "nonce", "v": "verifier", "next": "/"})
    assert await pending.take("state-1") == {"n": "nonce", "v": "verifier", "next": "/"}
    assert await pending.take("state-1") is None
    assert await pending.take("never-made") is None
