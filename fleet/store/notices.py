"""The "session ended" notice a user reads on their next visit (keys.ended);
written by the script that ends the session (end_pod.lua, drop_claim.lua: _tell.lua)."""

from __future__ import annotations

import contextlib
import json

from redis.exceptions import WatchError

from .. import keys
from .base import StoreBase


class NoticeStore(StoreBase):
    """Each user's unread notice."""

    async def pop_ended(self, user: str) -> dict[str, object] | None:
        raw = await self.redis.getdel(keys.ended(user))
        return json.loads(raw) if raw else None

    async def unread_ended(self, user: str) -> dict[str, object] | None:
        """The user's unread "session ended" notice, unless they hold a claim already.

        The notice only stops a NEW claim: a user with a claim (a newer session,
        e.g. started by a request that counted as activity) is routed to it, and
        the notice, about the session before, is dropped as stale.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.ended(user))
            pipe.exists(keys.claim(user))
            raw, claimed = await pipe.execute()
        if raw and claimed:
            await self._drop_notice(user, raw)
            return None
        return json.loads(raw) if raw else None

    async def _drop_notice(self, user: str, raw: str) -> None:
        """Delete the notice only if it is still `raw` (a newer one is kept for its user)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            with contextlib.suppress(WatchError):
                await pipe.watch(keys.ended(user))
                if await pipe.get(keys.ended(user)) == raw:
                    pipe.multi()
                    pipe.delete(keys.ended(user))
                    await pipe.execute()
