"""Bearer tokens for the admin JSON API: created and revoked by an admin in the console
(never through the API: a token cannot mint tokens), stored hashed.

A token is 256 random bits, so a plain SHA-256 is enough to make a stolen
Redis dump useless (no slow hash needed: there is nothing to brute-force).
The token itself is shown once, at creation. Lookups are one HGET by hash.
A token expires (SDB_API_TOKEN_TTL), carries scopes (read, sessions, fleet,
tokens: a dashboard's token has only read), remembers when it was last used
(one HSET per API call: calls are few, never per proxied request), and is
worth nothing once its creator is no admin any more: rights are re-checked
on every use.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis

from fleet import keys, redis_text

from ..identity import Identity
from ..security.access import AccessPolicy
from .models import SCOPES, NewToken, TokenView

PREFIX = "sdbt_"
MAX_TOKEN = 128


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock

    async def create(
        self, name: str, by: Identity, *, ttl: float, scopes: Iterable[str] = SCOPES
    ) -> NewToken:
        """A new token with the given scopes (unknown names ignored; none at all: read)."""
        token = PREFIX + secrets.token_urlsafe(32)
        key = digest(token)
        now = self.clock()
        chosen = [s for s in SCOPES if s in set(scopes)] or ["read"]
        summary = "admin" if len(chosen) == len(SCOPES) else "+".join(chosen)
        view = TokenView(
            id=key[:12], name=name.strip()[:64] or "unnamed", created=now, by=by.user,
            expires=now + ttl, scope=summary, scopes=chosen, groups=list(by.groups),
        )  # fmt: skip
        await self.redis.hset(keys.API_TOKENS, key, view.model_dump_json())
        return NewToken(**view.model_dump(), token=token)

    async def verify(
        self, token: str | None, access: AccessPolicy, *, ttl: float
    ) -> TokenView | None:
        """The token's record, or None for anything unknown, revoked, malformed, expired,
        or made by someone who is no admin now."""
        if not token or not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
            return None
        raw = await self.redis.hget(keys.API_TOKENS, digest(token))
        if not raw:
            return None
        view = TokenView.model_validate_json(raw)
        if self.clock() >= (view.expires or view.created + ttl):
            return None
        creator = Identity(user=view.by, email=view.by if "@" in view.by else "",
                           groups=tuple(view.groups))  # fmt: skip
        if not access.is_admin(creator):
            return None
        await self.redis.hset(keys.API_TOKENS_USED, digest(token), repr(self.clock()))
        return view

    async def all(self) -> list[TokenView]:
        raw = await self.redis.hgetall(keys.API_TOKENS)
        used = await self.redis.hgetall(keys.API_TOKENS_USED)
        views = [
            TokenView.model_validate({**json.loads(v), "last_used": used.get(k)})
            for k, v in raw.items()
        ]
        return sorted(views, key=lambda v: v.created)

    async def revoke(self, token_id: str) -> bool:
        """Revoke by the id shown in the console (the first 12 hex digits of the hash)."""
        if len(token_id) != 12:
            return False
        for key in redis_text.texts(await self.redis.hkeys(keys.API_TOKENS)):
            if key.startswith(token_id):
                await self.redis.hdel(keys.API_TOKENS_USED, key)
                return bool(await self.redis.hdel(keys.API_TOKENS, key))
        return False
