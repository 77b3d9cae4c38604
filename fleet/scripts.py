"""The Lua scripts in fleet/lua/, read once and registered with redis-py.

redis-py's Script objects use EVALSHA and reload on NoScriptError, so a
restarted or flushed Redis is handled without our help.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_NAMES = (
    "claim",
    "add_pod",
    "mark_ready",
    "end_pod",
    "forget_pod",
    "leader",
    "unlock",
    "reap_candidates",
    "drop_claim",
    "strike",
)


def _source(name: str) -> str:
    return resources.files("fleet").joinpath("lua", f"{name}.lua").read_text()


_SOURCES = {name: _source(name) for name in _NAMES}


@dataclass(frozen=True, slots=True)
class Scripts:
    claim: AsyncScript
    add_pod: AsyncScript
    mark_ready: AsyncScript
    end_pod: AsyncScript
    forget_pod: AsyncScript
    leader: AsyncScript
    unlock: AsyncScript
    reap_candidates: AsyncScript
    drop_claim: AsyncScript
    strike: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(**{name: redis.register_script(src) for name, src in _SOURCES.items()})
