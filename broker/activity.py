"""Remember each user's last real activity in memory; write it to Redis in batches.

Never a Redis write per proxied request: one ZADD per flush for every user
seen since the last one, so each user is written at most once per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fleet import FleetStore, StoreUnavailable

log = logging.getLogger(__name__)


class ActivityRecorder:
    def __init__(self, store: FleetStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._seen: dict[str, float] = {}

    def saw(self, user: str) -> None:
        self._seen[user] = self.clock()

    async def flush(self) -> int:
        if not self._seen:
            return 0
        batch, self._seen = self._seen, {}
        try:
            await self.store.touch(batch)
        except StoreUnavailable as exc:
            for user, ts in batch.items():  # keep them for the next flush
                self._seen[user] = max(ts, self._seen.get(user, 0.0))
            log.warning("activity flush failed (%s); will retry", exc)
            return 0
        return len(batch)
