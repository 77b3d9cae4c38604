"""Server-side login state in Redis (oidc): sessions, and logins in progress.

The session cookie holds only a random 256-bit ticket; Redis keeps the session
under the SHA-256 of the ticket, so a Redis dump or a key in a log lets nobody
log in. Every login gets a new ticket and drops the browser's old one (no
fixation); sessions end after SDB_SESSION_TTL, and an admin can revoke one or
all of a user's. A replica remembers a session it has read for
SDB_SESSION_CACHE_TTL, so a proxied request costs no Redis call; a revocation
(logout, a new login, an admin's) is published with it, and every worker of
every replica drops the session from its cache on hearing it (`on_event`): it
is over everywhere at once, not after the cache's TTL.

A session also keeps the provider's access and refresh tokens, sealed
(AES-GCM) under a key derived from the ticket: only a request carrying the
cookie can open them, so a Redis dump holds no usable token either. Every
SDB_SESSION_REFRESH one worker of one replica (`claim_refresh`, a compare-
and-set on the `checked` field) asks the provider again (oidc.py) and
`update`s the session, which every cache then drops like a revocation.

A login in progress (PKCE verifier, nonce, where to go next) is kept under the
hash of its `state`, read and deleted in one step: a callback works once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from redis.exceptions import WatchError

from fleet import Event, Kind, keys, redis_text

from ..identity import Identity

TICKET = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
CACHE_SIZE = 10_000


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(ticket: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sdbroker tokens")
    return AESGCM(hkdf.derive(ticket.encode()))


def seal(ticket: str, tokens: dict[str, Any]) -> str:
    """The provider's tokens, readable again only with the session's ticket."""
    nonce = secrets.token_bytes(12)
    sealed = nonce + _key(ticket).encrypt(nonce, json.dumps(tokens).encode(), None)
    return base64.urlsafe_b64encode(sealed).decode()


def unseal(ticket: str, sealed: str) -> dict[str, Any]:
    """What `seal` sealed; {} when nothing was, or not with this ticket."""
    try:
        raw = base64.urlsafe_b64decode(sealed)
        tokens = json.loads(_key(ticket).decrypt(raw[:12], raw[12:], None))
    except (ValueError, InvalidTag):
        return {}
    return tokens if isinstance(tokens, dict) else {}


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # the ticket's hash: safe to show an admin, useless as a cookie
    identity: Identity
    created: float
    expires: float
    id_token: str = ""
    checked: float = 0.0  # when the provider last vouched for identity.groups and email
    tokens: str = ""  # sealed access/refresh tokens (`seal`)


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        *,
        ttl: float,
        cache_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.cache_ttl = cache_ttl
        self.clock = clock
        self._cache: OrderedDict[str, tuple[Session, float]] = OrderedDict()

    async def create(
        self,
        identity: Identity,
        *,
        id_token: str = "",
        replaces: str | None = None,
        tokens: dict[str, Any] | None = None,
    ) -> str:
        """A new session; returns its ticket (for the cookie only, never stored)."""
        if replaces:
            await self.revoke_ticket(replaces)
        ticket = new_secret()
        sid = digest(ticket)
        now = self.clock()
        seconds = max(1, int(self.ttl))
        fields = {
            "user": identity.user,
            "email": identity.email,
            "groups": json.dumps(list(identity.groups)),
            "sub": identity.sub,
            "created": repr(now),
            "expires": repr(now + self.ttl),
            "id_token": id_token,
            "checked": repr(now),
            "tokens": seal(ticket, tokens) if tokens else "",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.session(sid), mapping=redis_text.fields(fields))
            pipe.expire(keys.session(sid), seconds)
            pipe.sadd(keys.user_sessions(identity.user), sid)
            pipe.expire(keys.user_sessions(identity.user), seconds)
            await pipe.execute()
        await self._prune(identity.user)
        return ticket

    async def get(self, ticket: str | None) -> Session | None:
        if not ticket or not TICKET.fullmatch(ticket):
            return None
        sid = digest(ticket)
        now = self.clock()
        hit = self._cache.get(sid)
        if hit is not None and hit[1] > now and hit[0].expires > now:
            return hit[0]
        self._cache.pop(sid, None)
        session = _parse(sid, redis_text.text_hash(await self.redis.hgetall(keys.session(sid))))
        if session is None or session.expires <= now:
            return None
        self._cache[sid] = (session, now + self.cache_ttl)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return session

    async def claim_refresh(self, session: Session, now: float) -> bool:
        """Whether this caller is the one to ask the provider again: `checked` moves to
        `now` only if nobody moved it since `session` was read (other workers and
        replicas then see a fresh session and carry on)."""
        key = keys.session(session.id)
        self._cache.pop(session.id, None)  # a loser reads the moved `checked` next time
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                checked = await pipe.hget(key, "checked")
                if isinstance(checked, bytes):
                    checked = checked.decode()
                moved = checked is not None and checked != repr(session.checked)
                if moved or not await pipe.exists(key):  # another caller asks; or revoked
                    return False
                pipe.multi()
                pipe.hset(key, "checked", repr(now))
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def update(
        self,
        session: Session,
        ticket: str,
        *,
        checked: float,
        identity: Identity | None = None,
        tokens: dict[str, Any] | None = None,
    ) -> Session | None:
        """Store what the provider said now; None if the session ended meanwhile (it is
        not brought back). Every worker's cached copy goes."""
        key = keys.session(session.id)
        fields: dict[str, str] = {"checked": repr(checked)}
        if identity is not None:
            fields |= {"email": identity.email, "groups": json.dumps(list(identity.groups))}
        if tokens is not None:
            fields["tokens"] = seal(ticket, tokens)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if not await pipe.exists(key):
                    return None
                pipe.multi()
                pipe.hset(key, mapping=redis_text.fields(fields))
                pipe.publish(keys.EVENTS, Event(Kind.SESSION_CHANGED, subject=session.id).encode())
                await pipe.execute()
            except WatchError:
                pass  # revoked, or refreshed by someone else meanwhile: as Redis has it now
        self._cache.pop(session.id, None)
        return await self.get(ticket)

    async def revoke(self, sid: str) -> bool:
        """End one session by its id (the ticket's hash)."""
        self._cache.pop(sid, None)
        user = redis_text.text(await self.redis.hget(keys.session(sid), "user"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.session(sid))
            if user is not None:
                pipe.srem(keys.user_sessions(user), sid)
            pipe.publish(keys.EVENTS, Event(Kind.SESSION_REVOKED, subject=sid).encode())
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def revoke_ticket(self, ticket: str) -> bool:
        return bool(TICKET.fullmatch(ticket)) and await self.revoke(digest(ticket))

    async def revoke_user(self, user: str) -> int:
        """End every session of a user; returns how many there were."""
        sids = redis_text.texts(await self.redis.smembers(keys.user_sessions(user)))
        for sid in sids:
            self._cache.pop(sid, None)
        async with self.redis.pipeline(transaction=True) as pipe:
            for sid in sids:
                pipe.delete(keys.session(sid))
            pipe.delete(keys.user_sessions(user))
            if sids:
                revoked = Event(Kind.SESSION_REVOKED, subject=" ".join(sids))
                pipe.publish(keys.EVENTS, revoked.encode())
            results = await pipe.execute()
        return sum(results[: len(sids)])

    def on_event(self, event: Event) -> None:
        """Pub/sub handler: a session revoked anywhere leaves this cache at once; after a
        reconnect (revocations may have been missed) the whole cache goes."""
        if event.kind in (Kind.SESSION_REVOKED, Kind.SESSION_CHANGED):
            for sid in event.subject.split(" "):
                self._cache.pop(sid, None)
        elif event.kind is Kind.RECONNECT:
            self._cache.clear()

    async def sessions_of(self, user: str) -> list[Session]:
        sids = sorted(redis_text.texts(await self.redis.smembers(keys.user_sessions(user))))
        found = []
        for sid in sids:
            session = _parse(sid, redis_text.text_hash(await self.redis.hgetall(keys.session(sid))))
            if session is not None:
                found.append(session)
        return found

    async def _prune(self, user: str) -> None:
        """Forget ids of sessions Redis already expired, so the set does not grow forever."""
        sids = redis_text.texts(await self.redis.smembers(keys.user_sessions(user)))
        if len(sids) < 2:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.exists(keys.session(sid))
            alive = await pipe.execute()
        dead = [sid for sid, ok in zip(sids, alive, strict=True) if not ok]
        if dead:
            await self.redis.srem(keys.user_sessions(user), *dead)


def _parse(sid: str, data: dict[str, Any]) -> Session | None:
    if not data or not data.get("user"):
        return None
    try:
        groups = json.loads(data.get("groups") or "[]")
        identity = Identity(
            user=data["user"],
            email=data.get("email", ""),
            groups=tuple(str(g) for g in groups),
            sub=data.get("sub", ""),
        )
        return Session(
            id=sid,
            identity=identity,
            created=float(data["created"]),
            expires=float(data["expires"]),
            id_token=data.get("id_token", ""),
            checked=float(data.get("checked") or data["created"]),
            tokens=data.get("tokens", ""),
        )
    except (KeyError, ValueError, TypeError):
        return None


class PendingLogins:
    """Logins between the redirect to the provider and its callback, each usable once."""

    def __init__(self, redis: Redis, *, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl

    async def put(self, state: str, record: dict[str, str]) -> None:
        await self.redis.set(keys.login(digest(state)), json.dumps(record), ex=int(self.ttl))

    async def started_by(self, client: str) -> int:
        """Count one more login started by `client` in the last `ttl`; returns the count.
        Each costs a stored record for `ttl`: an anonymous flood must not fill Redis."""
        key = keys.login_starts(client)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=int(self.ttl), nx=True)  # the window opens (EXPIRE NX: Redis 7)
            pipe.incr(key)  # keeps the key's TTL
            _, count = await pipe.execute()
        return int(count)

    async def take(self, state: str) -> dict[str, str] | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.login(digest(state)))
            pipe.delete(keys.login(digest(state)))
            raw, _ = await pipe.execute()
        if not raw:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
