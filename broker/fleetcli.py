"""`sdbroker fleet diff|apply|status`: the admin's file against the running fleet.

They talk to the same Redis as the brokers (SDB_REDIS_URL, or the embedded
one's socket under SDB_DATA_DIR when a broker runs with it), never to a
broker: the running spec is the one stored in Redis, and apply is "store
it, then every broker swaps it in" (fleet.specstore).

Exit codes: 0 fine (diff: no change), 1 diff found changes, 2 an error the
admin must fix (bad file, no Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fleet import (
    Autoscaler,
    EmbeddedRedis,
    FleetSpec,
    FleetStore,
    SpecError,
    StoreUnavailable,
    connect_redis,
    load_spec,
    specstore,
    start_health,
)

EXIT_CHANGES = 1
EXIT_USAGE = 2


class CliError(Exception):
    """One message for the admin, exit 2."""


def redis_url(settings: Any) -> str:
    if settings.redis_url:
        return settings.redis_url
    embedded = EmbeddedRedis(settings.data_dir)
    if embedded.socket.exists():
        return embedded.url
    raise CliError(
        f"SDB_REDIS_URL is not set and no embedded Redis runs under {settings.data_dir} "
        f"(no {embedded.socket}): start the broker, or set SDB_REDIS_URL / SDB_DATA_DIR"
    )


def _load(path: str) -> FleetSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        raise CliError(str(exc)) from None


def _load_to_apply(path: str) -> FleetSpec:
    try:
        return _load(path)
    except CliError as exc:
        raise CliError(f"{exc}\nrefused: the running fleet is unchanged") from None


async def _running(redis: Any) -> tuple[specstore.Stored | None, FleetSpec | None, str]:
    """The stored spec, parsed when it can be, and why not when it cannot."""
    stored = await specstore.read(redis)
    if stored is None:
        return None, None, "no spec stored yet (no broker has run against this Redis)"
    try:
        return stored, specstore.check(stored.text, None, "<running spec>"), ""
    except SpecError as exc:
        return stored, None, f"the stored spec is invalid:\n{exc}"


async def diff(new: FleetSpec, path: str, settings: Any) -> int:
    redis = connect_redis(redis_url(settings))
    try:
        stored, running, problem = await _running(redis)
    finally:
        await redis.aclose()
    if problem:
        print(problem)
    if stored is not None and stored.sha == specstore.sha(new.source_text):
        print(f"{path}: no changes against the running spec {stored.sha}")
        return 0
    for line in specstore.changes(running, new):
        print(f"  {line}")
    if stored is not None:
        print()
        print(specstore.text_diff(stored.text, new.source_text, f"running ({stored.sha})", path))
    return EXIT_CHANGES


async def apply(new: FleetSpec, path: str, settings: Any) -> int:
    """Refuses (exit 2) a file `check` rejects; an invalid file never got this far (`_load`)."""
    text = new.source_text
    redis = connect_redis(redis_url(settings))
    try:
        stored, running, _ = await _running(redis)
        if stored is not None and stored.sha == specstore.sha(text):
            print(f"{path}: already running ({stored.sha}); nothing to apply")
            return 0
        try:
            new = specstore.check(text, running, path)
        except SpecError as exc:
            raise CliError(f"{exc}\nrefused: the running fleet is unchanged") from None
        heard = await specstore.store(redis, new, source="apply", by=getpass.getuser())
    finally:
        await redis.aclose()
    for line in specstore.changes(running, new):
        print(f"  {line}")
    print(f"applied {specstore.sha(text)}; {heard} broker(s) listening will switch to it now")
    return 0


def _when(at: float | None, tz: str) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, ZoneInfo(tz)).strftime("%a %Y-%m-%d %H:%M %Z")


async def status_rows(
    settings: Any, fallback: Callable[[], FleetSpec | None]
) -> tuple[FleetSpec, list[dict[str, Any]]]:
    """Rows of the running spec (or, before any broker stored one, of the `fallback` file)."""
    redis = connect_redis(redis_url(settings))
    try:
        _, running, problem = await _running(redis)
        if running is None:
            running = fallback()
            if running is None:
                raise CliError(problem)
        spec = running
        store = FleetStore(redis)
        sizings = await Autoscaler(redis, lambda: spec).sizings(spec)
        starts = await start_health.read(redis, [s.base.name for s in sizings])
        rows = []
        for s in sizings:
            counts = await store.counts(s.base.name)
            health = starts[s.base.name]
            nxt = s.base.schedule[s.next_entry] if s.next_entry is not None else None
            upcoming = s.base.with_schedule(nxt) if nxt else None
            why = (
                f"override by {s.override.by or '?'}"
                if s.override
                else f"schedule #{s.entry + 1}"
                if s.entry is not None
                else "file"
            )
            rows.append(
                {
                    "profile": s.base.name,
                    **counts,
                    "min": s.effective.min,
                    "buffer": s.effective.buffer,
                    "max": s.effective.max,
                    "sizes_from": why,
                    "next_change_at": s.next_at,
                    "next_change": f"{_when(s.next_at, spec.timezone)} -> "
                    f"{upcoming.min}/{upcoming.buffer}/{upcoming.max}"
                    if upcoming
                    else "-",
                    "start_failures_in_row": health.failures_in_row,
                    "failing": health.failing,
                    "last_start_error": health.last_error or None,
                    "last_start_failure_at": health.last_failure_at,
                }
            )
    finally:
        await redis.aclose()
    return spec, rows


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "PROFILE",
        "WARMING",
        "READY",
        "CLAIMED",
        "QUEUE",
        "MIN/BUFFER/MAX",
        "FROM",
        "NEXT CHANGE",
        "STARTS",
    ]
    body = [
        [
            r["profile"],
            str(r["warming"]),
            str(r["ready"]),
            str(r["claimed"]),
            str(r["queue"]),
            f"{r['min']}/{r['buffer']}/{r['max']}",
            r["sizes_from"],
            r["next_change"],
            _starts(r),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
    # The error itself under the table: a backend's message does not fit a column.
    lines += [
        f"{r['profile']}: last failed start: {r['last_start_error']}"
        for r in rows
        if r["start_failures_in_row"] and r["last_start_error"]
    ]
    return "\n".join(lines)


def _starts(row: dict[str, Any]) -> str:
    """The STARTS column: "ok", or how many failed in a row (FAILING once past the threshold)."""
    failed = row["start_failures_in_row"]
    if not failed:
        return "ok"
    return f"{'FAILING' if row['failing'] else 'failed'}: {failed} in a row"


async def status(settings: Any, *, as_json: bool) -> int:
    def own_file() -> FleetSpec | None:
        return _load(str(settings.fleet)) if Path(settings.fleet).exists() else None

    spec, rows = await status_rows(settings, own_file)
    if as_json:
        print(
            json.dumps({"timezone": spec.timezone, "at": time.time(), "profiles": rows}, indent=2)
        )
    else:
        print(table(rows))
    return 0


def run(coro_factory: Any) -> int:
    try:
        return asyncio.run(coro_factory())
    except CliError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"cannot reach Redis: {exc.__cause__ or exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or the host, not Redis: said as such, without a traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_commands(fleet: argparse._SubParsersAction, load_settings: Any) -> None:
    """Register diff, apply and status under `sdbroker fleet`."""
    d = fleet.add_parser("diff", help="show what applying a file would change in the running fleet")
    d.add_argument("file")
    d.set_defaults(func=lambda a: run(lambda: diff(_load(a.file), a.file, load_settings())))
    ap = fleet.add_parser(
        "apply", help="validate a file and make it the running spec of every broker"
    )
    ap.add_argument("file")
    ap.set_defaults(
        func=lambda a: run(lambda: apply(_load_to_apply(a.file), a.file, load_settings()))
    )
    st = fleet.add_parser(
        "status", help="per profile: pods by state, queue, sizes, next schedule change"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=lambda a: run(lambda: status(load_settings(), as_json=a.json)))
