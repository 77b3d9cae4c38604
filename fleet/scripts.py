"""The Lua scripts in fleet/lua/, read once and registered with redis-py.

redis-py's Script objects use EVALSHA and reload on NoScriptError, so a
restarted or flushed Redis is handled without our help.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return resources.files("fleet").joinpath("lua", f"{name}.lua").read_text()


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

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(**{name: redis.register_script(src) for name, src in _SOURCES.items()})


#: Each field above is the script `fleet/lua/<field>.lua`, read once at import.
_SOURCES = {f.name: _source(f.name) for f in fields(Scripts)}
