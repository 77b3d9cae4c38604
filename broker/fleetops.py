"""The broker's side of a fleet that changes while it runs (built by broker/runtime.py).

- hot reload: a `spec` event swaps in the applied spec (SpecFollower calls
  `swap`), then the schedule timer works out the next change again and the
  controller wakes;
- schedule timers: the autoscaler's `wake_at_changes` task wakes the
  controller at each schedule entry's firing (the sizes themselves come from
  fleet.autoscale);
- history: a sample of every profile's counts per SDB_HISTORY_INTERVAL
  (replicas share one series; the Lua call skips a sample taken already);
- the fleet file: when SDB_FLEET changes on disk (an edited file, a new
  ConfigMap), it is validated and applied like `sdbroker fleet apply`, once
  for all brokers (fleet.specstore); an invalid edit is refused and the
  running fleet kept.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from redis.asyncio import Redis

from fleet import (
    Controller,
    Event,
    Fleet,
    FleetSpec,
    FleetStore,
    History,
    Kind,
    SpecError,
    StoreUnavailable,
    load_spec,
    specstore,
)

from .waiting import WaitingRoom

log = logging.getLogger(__name__)


class FleetOps:
    """Spec swaps, the watched fleet file and history samples. Constructing it does no I/O."""

    def __init__(
        self,
        redis: Redis,
        fleet: Fleet,
        store: FleetStore,
        history: History,
        controller: Controller,
        room: WaitingRoom,
        *,
        fleet_file: Path,
        history_interval: float,
        respec: asyncio.Event,
    ) -> None:
        self.redis = redis
        self.fleet = fleet
        self.store = store
        self.history = history
        self.controller = controller
        self.room = room
        self.fleet_file = fleet_file
        self.history_interval = history_interval
        self.respec = respec  # set: the schedule timer works out the next change again
        self.seen_file = specstore.sha(_read(fleet_file))

    def swap(self, spec: FleetSpec) -> None:
        """The applied spec changed (SpecFollower): run it from now on."""
        self.fleet.use_spec(spec)
        self.respec.set()
        self.controller.wake()
        self.room.on_event(Event(Kind.SPEC))

    async def reload_file(self) -> None:
        """Apply SDB_FLEET if it changed on disk since the last look."""
        text = _read(self.fleet_file)
        digest = specstore.sha(text)
        if not text or digest == self.seen_file:
            return
        self.seen_file = digest
        try:
            spec = load_spec(self.fleet_file)
        except SpecError as exc:
            log.error(
                "%s changed but is invalid; keeping the running fleet:\n%s", self.fleet_file, exc
            )
            return
        try:
            # Once for all brokers (a second store would drop overrides set since);
            # every broker's follower swaps it in.
            if await specstore.store(self.redis, spec, source="file", once=True) is None:
                return
        except StoreUnavailable as exc:
            self.seen_file = ""  # try again next time
            log.warning("could not apply the changed %s: %s", self.fleet_file, exc)
            return
        log.info("%s changed: applied (%d profiles)", self.fleet_file, len(spec.profiles))

    async def sample(self) -> None:
        """One history sample of every profile's counts (skipped while Redis is away)."""
        try:
            await self.history.sample(
                (p.name for p in self.fleet.spec.profiles),
                self.store.clock(),
                self.history_interval,
            )
        except StoreUnavailable as exc:
            log.warning("history sample skipped: %s", exc)


def _read(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""
