"""The Lua scripts in fleet/lua/, read once and registered with redis-py.

redis-py's Script objects use EVALSHA and reload on NoScriptError, so a
restarted or flushed Redis is handled without our help.

Every script is loaded with one line in front of it, the prelude: key builders
templated from fleet/keys.py (`pod_key(id)`, `claim_key(user)`, `warming_key`,
`ready_key`, `claimed_key(profile)`), the `EVENTS` channel, and the `EVENT`
kinds with `publish(kind, profile, subject)` from fleet/events.py. So a script
gets a key through KEYS or through those builders, never by spelling one, and
publishes exactly the encoded `Event`. A line `--@include NAME` is replaced by
the fragment fleet/lua/NAME.lua (the claim-writing block of claim.lua and
bind.lua is `_write_claim`). A line number in a Lua error counts the prelude
line and any fragment included above it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from . import keys
from .events import lua_prelude

#: The Lua key builders of the prelude, each templated from its keys.py function.
_KEY_BUILDERS: dict[str, Callable[[str], str]] = {
    "pod_key": keys.pod,
    "claim_key": keys.claim,
    "warming_key": keys.warming,
    "ready_key": keys.ready,
    "claimed_key": keys.claimed,
    "ended_key": keys.ended,
    "presence_key": keys.presence,
    "group_holders_key": keys.group_holders,
}
_INCLUDE = re.compile(r"^--@include (_[a-z_]+)$", re.MULTILINE)


def _read(name: str) -> str:
    return resources.files("fleet").joinpath("lua", f"{name}.lua").read_text()


def _lua_string(text: str) -> str:
    """A Lua literal of a key name; refused when quoting would be needed (never so today)."""
    if not text.isprintable() or "'" in text or "\\" in text:
        raise ValueError(f"key name {text!r} cannot be templated into Lua")
    return f"'{text}'"


def _key_builder(name: str, build: Callable[[str], str]) -> str:
    """`local function NAME(x)` returning what `build(x)` returns, for any x."""
    marker = "\x00"
    head, found, tail = build(marker).partition(marker)
    if not found or marker in tail:
        raise ValueError(f"keys.{build.__name__} is no PREFIX + x + SUFFIX")
    parts = [_lua_string(head), "x", *([_lua_string(tail)] if tail else [])]
    return f"local function {name}(x) return {' .. '.join(parts)} end"


def prelude() -> str:
    """The one line every script starts with (see the module's docstring)."""
    builders = " ".join(_key_builder(name, build) for name, build in _KEY_BUILDERS.items())
    return f"local EVENTS = {_lua_string(keys.EVENTS)} {builders} {lua_prelude()}"


def _source(name: str) -> str:
    """A script as Redis runs it: the prelude, then the file with its fragments in place."""
    text = _INCLUDE.sub(lambda m: _read(m.group(1)).rstrip("\n"), _read(name))
    return prelude() + "\n" + text


@dataclass(frozen=True, slots=True)
class Scripts:
    claim: AsyncScript
    add_pod: AsyncScript
    mark_ready: AsyncScript
    end_pod: AsyncScript
    forget_pod: AsyncScript
    restore: AsyncScript
    leader: AsyncScript
    unlock: AsyncScript
    reap_candidates: AsyncScript
    drop_claim: AsyncScript
    strike: AsyncScript
    bind: AsyncScript
    bound: AsyncScript
    pods: AsyncScript
    reattach: AsyncScript
    drop_waiters: AsyncScript
    presence_beat: AsyncScript
    gone_candidates: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(**{name: redis.register_script(src) for name, src in _SOURCES.items()})


#: Each field above is the script `fleet/lua/<field>.lua`, read once at import.
_SOURCES = {f.name: _source(f.name) for f in fields(Scripts)}
