"""The in-broker reaper: a periodic task (fleet.Tasks), run by one replica at a time.

Every replica runs the task; each tick first takes or renews a Redis
leader lock, so N replicas reap once. The lock lives two intervals: the
leader renews it every tick, and if the leader dies another replica takes
over within two intervals. Cycles are compare-and-delete anyway, so a
moment of two leaders (or a CronJob running beside us) ends nothing twice.

Detection lag: a session idle since t is a candidate from t + idle_timeout,
seen by the next tick (<= one interval later), and ended after the settle
wait (SDB_ACTIVITY_FLUSH): at most idle_timeout + interval + flush, which is
within idle_timeout + 2 x interval while the flush is not longer than the
interval. A leader failover adds up to one lock lifetime once. A generation's
end is seen by the first tick after it (<= one interval late; keys.BUSY), and
idle time counts from that tick.
"""

from __future__ import annotations

import contextlib
import logging

from fleet import FleetStore, LeaderLock, StoreUnavailable, Tasks, keys

from .cycle import ReapCycle, Summary

log = logging.getLogger(__name__)
JOB_ID = "reaper"


class ReaperJob:
    """One cycle per tick while this replica holds the reaper lock."""

    def __init__(self, cycle: ReapCycle, *, interval: float) -> None:
        store: FleetStore = cycle.store
        self.cycle = cycle
        self.interval = interval
        self.lock = LeaderLock(
            store.redis, store.scripts, keys.REAPER_LEADER, ttl=max(2 * interval, 1.0)
        )
        self.last: Summary | None = None

    async def tick(self) -> Summary | None:
        """Reap once if we lead; None when another replica leads or Redis is down."""
        try:
            if not await self.lock.acquire():
                return None
            summary = await self.cycle.run()
        except StoreUnavailable as exc:
            log.warning("reaper: %s; next try in %.0fs", exc, self.interval)
            return None
        self.last = summary
        if summary.reclaimed or summary.errors or summary.unreachable:
            log.info("reaper: %s", summary.json_line())
        return summary

    def schedule(self, tasks: Tasks) -> None:
        """Tick every interval as a periodic task (one tick at a time, none queued)."""
        tasks.every(JOB_ID, self.interval, self.tick)

    async def stop(self) -> None:
        """Give the lock up so another replica takes over at its next tick."""
        with contextlib.suppress(StoreUnavailable):
            await self.lock.release()
