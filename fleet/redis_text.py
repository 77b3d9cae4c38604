"""Replies as text and fields as redis-py's types: the typing side of the Redis boundary.

Every client sdbroker makes decodes replies to `str` (`decode_responses` in
fleet/redis_client.py and fleet/embedded_redis.py), but redis-py 8.2 types its
commands for either setting: `hgetall` as `dict[bytes | str, bytes | str]`,
`get` as `bytes | str | None` (redis/commands/core.py), and the mapping of
`hset` / `xadd` as a mapping over `EncodableT` (redis/typing.py), whose
invariant key type refuses a `dict[str, str]`. These functions say so once,
at no cost at run time, instead of a cast or an ignore at each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from redis.typing import EncodableT

Reply = bytes | str


def text(value: Reply | None) -> str | None:
    """A decoded reply (`get`, `hget`, a stream id)."""
    return cast("str | None", value)


def text_hash(raw: Mapping[Reply, Reply]) -> dict[str, str]:
    """A decoded hash (`hgetall`, a stream entry's fields)."""
    return cast("dict[str, str]", raw)


def texts(raw: Iterable[object]) -> list[str]:
    """Decoded members (`smembers`, `zrange`, `lrange`), in their order."""
    return cast("list[str]", list(raw))


def fields(mapping: dict[str, str]) -> dict[EncodableT, EncodableT]:
    """A str-keyed dict for `hset(mapping=)` and `xadd`, which take it as it is."""
    return cast("dict[EncodableT, EncodableT]", mapping)


def stream_entries(raw: object) -> list[tuple[str, dict[str, str]]]:
    """Decoded `xrange` / `xrevrange` entries: (id, fields), oldest or newest first."""
    return cast("list[tuple[str, dict[str, str]]]", raw or [])
