"""Fleet events: one typed `Event`, the same wire form from Python and from Lua.

The Lua scripts are run against a real Redis while a subscriber listens, and
every message they publish must parse back into the event it says (the Lua
helper and `Event.encode` are two writers of one format). A request waiting
for another broker to bind a user's pod goes on when the `bound` event comes,
instead of asking Redis every 20 ms.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from importlib import resources

import aiohttp
import pytest
from redis.asyncio import Redis

from fleet import Claim, Controller, Fleet, FleetStore, PodRecord, connect_redis, keys, service
from fleet.events import LUA_KINDS, Event, Kind, parse
from fleet.listener import listen
from fleet.model import Phase
from fleet.reconcile import reattach
from fleet.scripts import prelude
from tests.chaos.fake_backend import FakeBackend
from tests.chaos.test_claims_state_machine import SPEC  # one profile "default", buffer 2
from tests.support.clock import StepClock

LUA = {p.name: p.read_text() for p in resources.files("fleet").joinpath("lua").iterdir()
       if p.name.endswith(".lua")}  # fmt: skip


Clock = StepClock


# --- the wire form -----------------------------------------------------------------

WIRE = [
    ("claim default ann", Event(Kind.CLAIM, "default", "ann")),
    ("bound default Dan Q", Event(Kind.BOUND, "default", "Dan Q")),  # a user id with a space
    ("release default ann", Event(Kind.RELEASE, "default", "ann")),
    ("queue default ann", Event(Kind.QUEUE, "default", "ann")),
    ("queue default", Event(Kind.QUEUE, "default")),
    ("ready default default-1", Event(Kind.READY, "default", "default-1")),
    ("rebuild", Event(Kind.REBUILD)),
    ("scale default", Event(Kind.SCALE, "default")),
    ("spec 0123abcd", Event(Kind.SPEC, subject="0123abcd")),
    ("session-revoked s1 s2", Event(Kind.SESSION_REVOKED, subject="s1 s2")),
    ("session-changed s1", Event(Kind.SESSION_CHANGED, subject="s1")),
]


@pytest.mark.parametrize(("wire", "event"), WIRE, ids=[w for w, _ in WIRE])
def test_every_kind_round_trips(wire: str, event: Event) -> None:
    assert parse(wire) == event
    assert event.encode() == wire


def test_the_table_covers_every_kind_on_the_wire() -> None:
    assert {e.kind for _, e in WIRE} == set(Kind) - {Kind.RECONNECT}


@pytest.mark.parametrize(
    "wire", ["", "claim", "claim default", "rebuild now", "scale default extra", "reconnect",
             "teleport default ann", "spec"],
)  # fmt: skip
def test_a_message_that_is_no_event_parses_to_none(wire: str) -> None:
    """A newer replica's kind, or a field missing, is skipped rather than misread."""
    assert parse(wire) is None


@pytest.mark.parametrize(
    "event",
    [Event(Kind.CLAIM, "default"), Event(Kind.CLAIM, "two words", "ann"), Event(Kind.REBUILD,
     "default"), Event(Kind.SCALE, "default", "x"), Event(Kind.RECONNECT), Event(Kind.SPEC)],
)  # fmt: skip
def test_an_event_that_would_not_parse_back_is_refused(event: Event) -> None:
    with pytest.raises(ValueError):
        event.encode()


# --- what the Lua scripts publish ---------------------------------------------------


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[FleetStore]:
    redis = connect_redis(redis_url)
    store = FleetStore(redis, clock=Clock())
    await store.mark_built()
    yield store
    await redis.aclose()


async def test_every_event_the_lua_scripts_publish_parses_as_itself(store: FleetStore) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.EVENTS)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    assert await store.add_pod("default-1", "default", 10)
    assert await store.mark_ready("default-1", "default", "http://127.0.0.1:20001")  # ready
    ann = await store.claim("ann", "default", queue_grace=60)  # claim.lua: claim
    assert isinstance(ann, Claim)
    assert await store.mark_bound(ann)  # bound.lua: bound
    assert await store.mark_bound(ann)  # already bound: nothing published again
    await store.claim("Dan Q", "default", queue_grace=60)  # claim.lua: queue (no pod free)
    clock.now += 120
    assert await store.drop_gone_waiters("default", 60) == ["Dan Q"]  # drop_waiters.lua: queue
    assert await store.end_pod("default-1", "idle")  # end_pod.lua: release
    await store.redis.hset(keys.claim("bob"), mapping={"pod": "gone-1", "profile": "default"})
    assert await store.drop_claim("bob", "gone-1") == 1  # drop_claim.lua: release
    rec = PodRecord("default-2", "default", Phase.READY, addr="http://127.0.0.1:20002")
    assert isinstance(await store.bind("eve", rec), Claim)  # bind.lua: claim
    owned = PodRecord("default-2", "default", Phase.READY, user="fay", claimed_at=clock.now)
    assert (await reattach(store, owned)).kind == "reattached"  # reattach.lua: release, claim

    heard = []
    while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1):
        heard.append(message["data"])
    await pubsub.aclose()
    events = [parse(wire) for wire in heard]
    assert [e.encode() if e else None for e in events] == heard  # each parses as itself
    assert events == [
        Event(Kind.READY, "default", "default-1"),
        Event(Kind.CLAIM, "default", "ann"),
        Event(Kind.BOUND, "default", "ann"),
        Event(Kind.QUEUE, "default", "Dan Q"),
        Event(Kind.QUEUE, "default"),
        Event(Kind.RELEASE, "default", "ann"),
        Event(Kind.RELEASE, "default", "bob"),
        Event(Kind.CLAIM, "default", "eve"),
        Event(Kind.RELEASE, "default", "eve"),
        Event(Kind.CLAIM, "default", "fay"),
    ]
    published = {Kind(k) for text in LUA.values() for k in re.findall(r"EVENT\.(\w+)", text)}
    assert {e.kind for e in events if e} == published == set(LUA_KINDS)


async def test_the_lua_key_builders_are_the_ones_in_keys_py(store: FleetStore) -> None:
    built = await store.redis.eval(
        prelude() + "\nreturn {EVENTS, pod_key(ARGV[1]), claim_key(ARGV[1]),"
        " warming_key(ARGV[1]), ready_key(ARGV[1]), claimed_key(ARGV[1])}",
        0,
        "a b",
    )
    assert built == [keys.EVENTS, keys.pod("a b"), keys.claim("a b"), keys.warming("a b"),
                     keys.ready("a b"), keys.claimed("a b")]  # fmt: skip


def test_no_lua_script_spells_a_key_or_a_message() -> None:
    """Keys come through KEYS or the prelude's builders (templated from fleet/keys.py);
    messages through its `publish`: a layout change in keys.py reaches every script."""
    for name, text in LUA.items():
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        assert "PUBLISH" not in code, name
        assert not re.search(r"ARGV\[\d+\]\s*\.\.", code), f"{name} builds a key from ARGV"
        assert not re.search(r"'(sdb|pod|claim|warming|ready|claimed|queue):", code), name
        assert not re.search(r"\.\.\s*':'", code), f"{name} joins a key name"


def test_the_claim_writing_block_is_written_once() -> None:
    writers = [name for name, text in LUA.items() if "'binding', '1'" in text]
    assert writers == ["_write_claim.lua"]
    for name in ("claim.lua", "bind.lua"):
        assert "--@include _write_claim" in LUA[name].splitlines()


async def test_the_listener_hands_on_events_and_skips_what_it_cannot_read(
    store: FleetStore,
) -> None:
    """First a RECONNECT (caches start over: messages may have been missed), then each event
    parsed; a newer replica's kind is skipped and the listener carries on."""
    heard: list[Event] = []
    subscribed, got_claim = asyncio.Event(), asyncio.Event()

    def handler(event: Event) -> None:
        heard.append(event)
        subscribed.set()
        if event.kind is Kind.CLAIM:
            got_claim.set()

    listener = asyncio.create_task(listen(store.redis, [handler]))
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
            await store.redis.publish(keys.EVENTS, "teleport default ann")
            await store.publish(Event(Kind.CLAIM, "default", "ann"))
            await got_claim.wait()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert heard == [Event(Kind.RECONNECT), Event(Kind.CLAIM, "default", "ann")]


# --- waiting for another broker's binding ------------------------------------------


class CountingStore(FleetStore):
    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.lookups = 0
        self.looked = asyncio.Event()

    async def lookup(self, user: str) -> Claim | None:
        self.lookups += 1
        self.looked.set()
        return await super().lookup(user)


async def test_a_waiting_request_goes_on_at_the_bound_event_not_by_polling(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker B's request for ann waits while broker A binds her pod; A's mark_bound
    publishes `bound`, B's listener hands it to B's Fleet, which looks once more and
    returns. The fallback look is set to an hour: only the event can end the wait."""
    monkeypatch.setattr(service, "BIND_FALLBACK", 3600.0, raising=False)
    redis: Redis = connect_redis(redis_url)
    backend = FakeBackend(SPEC)
    store_a, store_b = FleetStore(redis), CountingStore(redis)
    binding, release = asyncio.Event(), asyncio.Event()

    async def slow_binding() -> None:
        binding.set()
        await release.wait()

    async with aiohttp.ClientSession() as http:
        controller = Controller(store_a, backend, lambda: SPEC, http)
        await controller.reconcile()  # index built, buffer pods created
        await controller.reconcile()  # and ready
        a, b = Fleet(store_a, backend, SPEC, http), Fleet(store_b, backend, SPEC, http)
        listener = asyncio.create_task(listen(redis, [b.on_event]))
        try:
            backend.before_mark = slow_binding
            first = asyncio.create_task(a.claim("ann"))
            await binding.wait()  # A holds a claim that is binding
            second = asyncio.create_task(b.claim("ann"))
            await store_b.looked.wait()  # B is waiting for the binding
            await asyncio.sleep(0.3)  # a poll every 20 ms would look ~15 times meanwhile
            release.set()
            async with asyncio.timeout(20):
                got_a, got_b = await asyncio.gather(first, second)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    await redis.aclose()
    assert isinstance(got_a, Claim) and isinstance(got_b, Claim)
    assert got_b.pod == got_a.pod and not got_b.binding
    assert store_b.lookups == 2  # once on arrival, once when the event came
