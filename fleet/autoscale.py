"""A profile's sizes right now: the file, then its schedule, then an admin's "for now".

Effective sizes are worked out from a clock on every call rather than kept
up to date by timers, so a broker started at 10:00 knows the 09:00 entry
applies, a replica that missed a timer is still right, and tests move time
by injecting the clock. A timer task (`wake_at_changes`) only *wakes* the
controller at each firing so the change is applied at that moment, not at the next tick.

Order of precedence (each replaces only the sizes it names):
1. the profile in fleet.yaml;
2. the schedule entry that fired last (in the spec's timezone);
3. the admin's override, if it was set after that firing. The next schedule
   change replaces it: "for now" means until the plan says otherwise.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from redis.asyncio import Redis

from . import keys, redis_text
from .aiotasks import raise_if_cancelled
from .events import Event, Kind
from .spec import FleetSpec, Profile, ScheduleEntry

log = logging.getLogger(__name__)
Clock = Callable[[], float]
RECHECK = 60.0  # seconds the schedule timer sleeps at most before working the next change out
# Windows looked back through for an entry's latest firing; a cron fires at least every 4 years.
LOOKBACK = tuple(timedelta(days=d) for d in (1 / 24, 1, 8, 32, 367, 4 * 366 + 1))


class SizeError(ValueError):
    """An admin's sizes that the profile cannot take (min above max, beyond the hardware)."""


@dataclass(frozen=True, slots=True)
class Override:
    """Sizes an admin set at runtime; None leaves the scheduled value."""

    buffer: int | str | None = None
    min: int | None = None
    max: int | None = None
    at: float = 0.0
    by: str = ""

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Override | None:
        if not data:
            return None
        buffer = data.get("buffer") or None
        return cls(
            buffer=int(buffer) if buffer is not None and buffer.isdigit() else buffer,
            min=int(data["min"]) if data.get("min") else None,
            max=int(data["max"]) if data.get("max") else None,
            at=float(data.get("at") or 0),
            by=data.get("by", ""),
        )

    def apply(self, profile: Profile) -> Profile:
        sizes = {"buffer": self.buffer, "min": self.min, "max": self.max}
        return profile.model_copy(update={k: v for k, v in sizes.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Sizing:
    """Everything an admin wants to know about why a profile has the sizes it has."""

    base: Profile
    effective: Profile
    entry: int | None  # index of the schedule entry in force
    fired_at: float | None
    override: Override | None  # in force (None when absent or superseded)
    next_at: float | None  # next schedule change
    next_entry: int | None


def _parse_buffer(value: str) -> int | str:
    value = value.strip()
    if value.isdigit():
        return int(value)
    if value.endswith("%") and value[:-1].strip().isdigit() and 1 <= int(value[:-1]) <= 100:
        return f"{int(value[:-1])}%"
    raise SizeError(f"buffer must be a whole number or a percentage like 20%, got {value!r}")


def check_override(
    profile: Profile, scheduled: Profile, *, buffer: int | str | None, min: int | None,
    max: int | None,
) -> Override:  # fmt: skip
    """The override if `scheduled` can take it; SizeError says why not.

    The ceiling for max is the largest max the file allows anywhere (the
    profile or one of its schedule entries): the file is where an admin
    promised that much hardware (the local backend's GPU slots are checked
    against it), so a runtime change never goes beyond it.
    """
    if isinstance(buffer, str):
        buffer = _parse_buffer(buffer)
    for name, value in (("buffer", buffer), ("min", min), ("max", max)):
        if isinstance(value, int) and value < (1 if name == "max" else 0):
            raise SizeError(f"{name} must be at least {1 if name == 'max' else 0}")
    ceiling = builtins.max([profile.max, *(e.max for e in profile.schedule if e.max)])
    top = max if max is not None else scheduled.max
    low = min if min is not None else scheduled.min
    if top > ceiling:
        raise SizeError(f"max ({top}) is above the most fleet.yaml allows ({ceiling})")
    if low > top:
        raise SizeError(f"min ({low}) is greater than max ({top})")
    warm = buffer if buffer is not None else scheduled.buffer
    if isinstance(warm, int) and warm > top:
        raise SizeError(f"buffer ({warm}) is greater than max ({top})")
    return Override(buffer=buffer, min=min, max=max)


class Autoscaler:
    """Effective sizes of every profile; overrides in Redis so every replica agrees."""

    def __init__(self, redis: Redis, spec: Callable[[], FleetSpec], *, clock: Clock = time.time):
        self.redis = redis
        self.spec = spec
        self.clock = clock
        # (cron, timezone) -> (last firing, next firing); valid while now < next firing.
        self._fired: dict[tuple[str, str], tuple[float | None, float | None]] = {}

    # --- schedules (pure, from the clock) -------------------------------------

    def _firings(
        self, entry: ScheduleEntry, tz: str, now: float
    ) -> tuple[float | None, float | None]:
        """(latest firing at or before now, next firing after now) of one entry."""
        key = (entry.cron, tz)
        cached = self._fired.get(key)
        if (
            cached is not None
            and (cached[0] or 0) <= now
            and (cached[1] is None or now < cached[1])
        ):
            return cached
        trigger = entry.trigger(tz)
        at = datetime.fromtimestamp(now, ZoneInfo(tz))
        last = _last_firing(trigger, at)
        upcoming = trigger.get_next_fire_time(None, at + timedelta(seconds=1))
        result = (last.timestamp() if last else None, upcoming.timestamp() if upcoming else None)
        self._fired[key] = result
        return result

    def scheduled(
        self, profile: Profile, tz: str, now: float
    ) -> tuple[Profile, int | None, float | None]:
        """The profile as its schedule has it at `now`: (profile, entry index, fired at)."""
        best: tuple[float, int] | None = None
        for index, entry in enumerate(profile.schedule):
            fired, _ = self._firings(entry, tz, now)
            if fired is not None and (best is None or fired >= best[0]):
                best = (fired, index)  # ties: the later entry in the file wins
        if best is None:
            return profile, None, None
        return profile.with_schedule(profile.schedule[best[1]]), best[1], best[0]

    def next_change(self, profile: Profile, tz: str, now: float) -> tuple[float | None, int | None]:
        """When the schedule next changes this profile, and to which entry."""
        soonest: tuple[float, int] | None = None
        for index, entry in enumerate(profile.schedule):
            _, upcoming = self._firings(entry, tz, now)
            if upcoming is not None and (soonest is None or upcoming < soonest[0]):
                soonest = (upcoming, index)
        return (soonest[0], soonest[1]) if soonest else (None, None)

    # --- with overrides (one Redis round trip) ----------------------------------

    async def overrides(self, names: Iterable[str]) -> dict[str, Override]:
        names = list(names)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.override(name))
            found = await pipe.execute()
        return {n: o for n, raw in zip(names, found, strict=True) if (o := Override.from_hash(raw))}

    async def sizings(self, spec: FleetSpec | None = None) -> list[Sizing]:
        spec = spec or self.spec()
        now = self.clock()
        overrides = await self.overrides(p.name for p in spec.profiles)
        out = []
        for profile in spec.profiles:
            scheduled, entry, fired = self.scheduled(profile, spec.timezone, now)
            override = overrides.get(profile.name)
            if override is not None and fired is not None and override.at < fired:
                override = None  # the plan changed since the admin's "for now"
            effective = override.apply(scheduled) if override else scheduled
            next_at, next_entry = self.next_change(profile, spec.timezone, now)
            out.append(Sizing(profile, effective, entry, fired, override, next_at, next_entry))
        return out

    async def effective(self, spec: FleetSpec | None = None) -> list[Profile]:
        """Every profile at its sizes now (what the controller scales to)."""
        return [s.effective for s in await self.sizings(spec)]

    async def set_override(
        self, name: str, *, buffer: int | str | None = None, min: int | None = None,
        max: int | None = None, by: str = "",
    ) -> Override:  # fmt: skip
        """Change a profile's sizes for now; SizeError when they do not fit; KeyError: no profile."""
        spec = self.spec()
        profile = spec.profile(name)
        scheduled, _, _ = self.scheduled(profile, spec.timezone, self.clock())
        checked = check_override(profile, scheduled, buffer=buffer, min=min, max=max)
        fields = {
            "buffer": "" if checked.buffer is None else str(checked.buffer),
            "min": "" if checked.min is None else str(checked.min),
            "max": "" if checked.max is None else str(checked.max),
            "at": repr(self.clock()),
            "by": by,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.override(name))
            pipe.hset(keys.override(name), mapping=redis_text.fields(fields))
            pipe.publish(keys.EVENTS, Event(Kind.SCALE, name).encode())
            await pipe.execute()
        return Override.from_hash(fields) or checked

    async def clear_override(self, name: str) -> bool:
        self.spec().profile(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.override(name))
            pipe.publish(keys.EVENTS, Event(Kind.SCALE, name).encode())
            removed, _ = await pipe.execute()
        return bool(removed)

    # --- timers ------------------------------------------------------------------

    async def wake_at_changes(self, wake: Callable[[], None], respec: asyncio.Event) -> None:
        """Wake the controller at every schedule change of the running spec (a loop until
        cancelled; `respec` set: the spec changed, work the next change out again).

        Sleeps at most RECHECK at a time, so a clock stepped by NTP is noticed."""
        while True:
            raise_if_cancelled()
            spec, now = self.spec(), self.clock()
            changes = [self.next_change(p, spec.timezone, now)[0] for p in spec.profiles]
            due = min((at for at in changes if at is not None), default=None)
            wait = RECHECK if due is None else min(max(0.0, due - now), RECHECK)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await respec.wait()
            if respec.is_set():
                respec.clear()
                self._fired.clear()
            elif due is not None and due - now <= RECHECK:
                wake()


def _last_firing(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's latest fire time at or before `now`: scan forward from ever wider windows."""
    for window in LOOKBACK:
        last = None
        t = trigger.get_next_fire_time(None, now - window)
        while t is not None and t <= now:
            last = t
            t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        if last is not None:
            return last
    return None
