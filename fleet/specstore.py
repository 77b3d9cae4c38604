"""The running fleet spec, shared through Redis so every broker runs the same one.

`sdbroker fleet apply` validates a file and stores its text under keys.SPEC,
then publishes a `spec` event; every broker reads the text, validates it
again (a broker of another version may know other rules) and swaps it in
without a restart. Whatever is invalid is refused and the running spec kept.

The last change wins: a changed fleet file (noticed by a running broker
within SDB_FLEET_RELOAD, or brought by a starting one) or a `fleet apply`.
A restart changes nothing. So SPEC_META keeps `file`, the sha of the last
fleet file applied, and a starting broker runs:
- none in Redis: its own file, which it stores (source=file) so that
  `fleet diff` and `fleet status` have the running spec to compare with;
- its own file when that is not the last file applied (a new file: a deploy
  shipping sizes), which it stores;
- otherwise what runs, e.g. a spec `fleet apply` stored since that file (a
  differing file is logged): a restart never undoes an admin's apply.

A new spec drops the console's "For now" sizes (keys.override) of the
profiles whose sizes or schedule it changes, since those are a new plan; each
drop is logged and audited (reason `override_dropped`, on the console). The
others keep theirs. "For now" never goes above the file's max (fleet.autoscale).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import WatchError

from . import keys, redis_text
from .aiotasks import raise_if_cancelled
from .events import Event, Kind
from .spec import FleetSpec, SpecError, SpecIssue, parse_spec
from .store import AUDIT_MAXLEN

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 5  # brokers storing the same changed file at once: one wins, the rest see it
RECHECK = 30.0  # seconds: a missed pub/sub message is caught up this late at worst
SIZE_FIELDS = ("min", "buffer", "max")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Stored:
    """The spec text in Redis and where it came from."""

    text: str
    source: str  # "file" or "apply"
    sha: str
    at: float
    by: str
    file: str = ""  # sha of the last fleet file applied ("" = unknown: an older broker's)


async def read(redis: Redis) -> Stored | None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.SPEC)
        pipe.hgetall(keys.SPEC_META)
        text, meta = await pipe.execute()
    return _stored(text, meta)


def _stored(text: str | None, meta: dict[str, str]) -> Stored | None:
    if text is None:
        return None
    return Stored(
        text=text,
        source=meta.get("source", "apply"),
        sha=meta.get("sha") or sha(text),
        at=float(meta.get("at") or 0),
        by=meta.get("by", ""),
        file=meta.get("file", ""),
    )


def check(text: str, running: FleetSpec | None, filename: str = "<applied spec>") -> FleetSpec:
    """Validate `text` as a replacement for `running`; SpecError says why it cannot be.

    A different backend is refused: pods of the old one would be orphaned,
    so that change needs every broker restarted with the new file.
    """
    spec = parse_spec(text, filename)
    if running is not None and spec.backend != running.backend:
        raise SpecError(
            [
                SpecIssue(
                    filename,
                    1,
                    "backend",
                    f"cannot change from {running.backend} to {spec.backend} while running; "
                    "restart the brokers with the new file instead",
                )
            ]
        )
    return spec


async def store(
    redis: Redis,
    spec: FleetSpec,
    *,
    source: str,
    by: str = "",
    clock: Callable[[], float] = time.time,
    once: bool = False,
) -> int | None:
    """Store a validated spec and tell every broker; how many brokers heard it.

    The "For now" sizes of profiles whose sizes it changes are dropped with it
    (an admin's new plan means those, not an older "for now"), logged and audited.
    `once`: store nothing (None) when this text is already running or was the last
    file applied: every broker notices a changed file, one applies it.
    """
    for _ in range(STORE_ATTEMPTS):
        try:
            return await _store(redis, spec, source, by, clock(), once)
        except WatchError:  # another broker stored a spec meanwhile: look again
            continue
    raise WatchError(f"the fleet spec kept changing while storing {sha(spec.source_text)}")


async def _store(
    redis: Redis, spec: FleetSpec, source: str, by: str, now: float, once: bool
) -> int | None:
    text = spec.source_text
    digest = sha(text)
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(keys.SPEC, keys.SPEC_META)  # commands run at once until multi()
        before = _stored(
            redis_text.text(await pipe.get(keys.SPEC)),
            redis_text.text_hash(await pipe.hgetall(keys.SPEC_META)),
        )
        if once and before is not None and digest in (before.sha, before.file):
            return None
        resized = _resized(before, spec)
        overrides = [
            redis_text.text_hash(await pipe.hgetall(keys.override(name))) for name in resized
        ]
        meta = {"source": source, "sha": digest, "at": repr(now), "by": by}
        meta["file"] = digest if source == "file" else (before.file if before else "")
        pipe.multi()
        pipe.set(keys.SPEC, text)
        pipe.delete(keys.SPEC_META)
        pipe.hset(keys.SPEC_META, mapping=redis_text.fields(meta))
        for name in resized:
            pipe.delete(keys.override(name))
        pipe.publish(keys.EVENTS, Event(Kind.SPEC, subject=digest).encode())
        result = await pipe.execute()
    why = (
        "the fleet file changed" if source == "file" else f"fleet apply{' by ' + by if by else ''}"
    )
    for name, dropped in zip(resized, overrides, strict=True):
        if dropped:
            await _dropped(redis, name, dropped, digest, why, now)
    return int(result[-1])


def _resized(before: Stored | None, new: FleetSpec) -> list[str]:
    """Profiles of `new` whose sizes or schedule differ from the running spec's (all of
    them when that cannot be read)."""
    try:
        old = (
            {p.name: p for p in parse_spec(before.text, "<running spec>").profiles}
            if before
            else {}
        )
    except SpecError:
        old = {}
    fields = (*SIZE_FIELDS, "schedule")
    return [
        p.name
        for p in new.profiles
        if p.name not in old or any(getattr(p, f) != getattr(old[p.name], f) for f in fields)
    ]


async def _dropped(
    redis: Redis, profile: str, override: dict[str, str], digest: str, why: str, now: float
) -> None:
    """Say that an admin's "For now" sizes were dropped: the log and the console's audit."""
    sizes = " ".join(f"{k} {override[k]}" for k in SIZE_FIELDS if override.get(k))
    set_by = override.get("by", "")
    log.warning(
        "fleet spec %s: dropped the For now sizes of profile %s (%s, set by %s): %s, and it "
        "changes this profile's sizes",
        digest, profile, sizes or "none", set_by or "an admin", why,
    )  # fmt: skip
    event = {"user": "", "pod": "", "profile": profile, "reason": "override_dropped",
             "by": set_by, "at": repr(now),
             "detail": f"For now {sizes} dropped: {why} (spec {digest})"}  # fmt: skip
    await redis.xadd(keys.AUDIT, redis_text.fields(event), maxlen=AUDIT_MAXLEN, approximate=True)


async def adopt(redis: Redis, own: FleetSpec) -> FleetSpec:
    """The spec a starting broker runs (see the module docstring)."""
    if not own.source_text:  # built in code (tests): nothing to share
        return own
    stored = await read(redis)
    if stored is not None and stored.sha == sha(own.source_text):
        return own
    # A file the fleet has run already (or, from an older broker's meta, any file
    # while an apply runs) does not undo what was applied since.
    unchanged = stored is not None and stored.file in ("", sha(own.source_text))
    if stored is not None and stored.source == "apply" and unchanged:
        try:
            spec = check(stored.text, own)
        except SpecError as exc:
            log.error("the applied fleet spec in Redis is invalid here; running the file:\n%s", exc)
            return own
        log.warning(
            "running the fleet spec applied %s%s, not SDB_FLEET (which differs); "
            "`sdbroker fleet apply` the file to run it",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(stored.at)),
            f" by {stored.by}" if stored.by else "",
        )
        return spec
    if stored is not None:
        log.info(
            "SDB_FLEET is a file the fleet has not run yet: applying it (%s)", sha(own.source_text)
        )
    await store(redis, own, source="file", once=True)
    return own


def changes(old: FleetSpec | None, new: FleetSpec) -> list[str]:
    """What applying `new` changes for people and pods, one line each ("" lines never)."""
    if old is None:
        return [f"no running spec: all {len(new.profiles)} profiles are new"]
    out: list[str] = []
    for field in ("backend", "idle_timeout", "max_session", "timezone", "outputs"):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            out.append(f"{field}: {a} -> {b}")
    before = {p.name: p for p in old.profiles}
    after = {p.name: p for p in new.profiles}
    for name in after.keys() - before.keys():
        p = after[name]
        out.append(f"profile {name}: added (min {p.min}, buffer {p.buffer}, max {p.max})")
    for name in before.keys() - after.keys():
        out.append(f"profile {name}: removed (its pods are retired; claimed ones end)")
    for name in sorted(before.keys() & after.keys()):
        a_dump = before[name].model_dump()
        b_dump = after[name].model_dump()
        for field in (*SIZE_FIELDS, *sorted(a_dump.keys() - set(SIZE_FIELDS))):
            if a_dump.get(field) != b_dump.get(field):
                if field in (*SIZE_FIELDS, "display_name", "gpu", "start_timeout", "probe"):
                    out.append(f"profile {name}: {field} {a_dump[field]} -> {b_dump[field]}")
                else:
                    out.append(f"profile {name}: {field} changed")
    return sorted(out, key=lambda line: (not line.startswith(("backend", "idle", "max_")), line))


def text_diff(old: str, new: str, old_name: str = "running", new_name: str = "file") -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


class SpecFollower:
    """Swaps a broker's spec when a `spec` event says a new one was applied.

    The pub/sub handler only sets a flag; `run` (a named task) reads and
    validates the new text, so a slow Redis never blocks the event listener.
    A periodic re-check catches a message lost while pub/sub reconnected.
    """

    def __init__(
        self,
        redis: Redis,
        running: Callable[[], FleetSpec],
        swap: Callable[[FleetSpec], None],
    ) -> None:
        self.redis = redis
        self.running = running
        self.swap = swap
        self.refused = ""  # sha of the last text refused, so it is logged once
        self._changed = asyncio.Event()

    def on_event(self, event: Event) -> None:
        if event.kind is Kind.SPEC:
            self._changed.set()

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):  # not wait_for: 3.11 can swallow a cancel
                    await self._changed.wait()
            self._changed.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Swap in the stored spec if it is new and valid; True when swapped."""
        stored = await read(self.redis)
        running = self.running()
        if stored is None or stored.sha == sha(running.source_text) or stored.sha == self.refused:
            return False
        try:
            spec = check(stored.text, running)
        except SpecError as exc:
            self.refused = stored.sha
            log.error(
                "refused the applied fleet spec %s; keeping the running one:\n%s", stored.sha, exc
            )
            return False
        self.refused = ""
        self.swap(spec)
        log.info(
            "fleet spec %s applied (%d profiles): %s",
            stored.sha,
            len(spec.profiles),
            "; ".join(changes(running, spec)) or "no size changes",
        )
        return True
