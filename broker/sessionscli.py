"""`sdbroker sessions list|end USER` and `sdbroker user outputs USER`: the console's
Sessions table and Reclaim button, and the answer to "where are my images?", for a
shell or a script.

The session commands talk to the same Redis as the brokers (SDB_REDIS_URL and the
SDB_REDIS_* files, or the embedded one's socket under SDB_DATA_DIR), never to a
broker: a session is its claim in Redis, and ending one is the very call the
console's Reclaim makes (reaper.end_session), so the user gets the same ended
notice and every broker drops its route on the same event.

Exit codes: 0 done; 1 nothing done (USER has no session, Redis unreachable);
2 an error the admin must fix (bad settings, bad fleet file).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from fleet import (
    FleetSpec,
    FleetStore,
    PasswordFileUnreadable,
    PodState,
    RedisConfigError,
    SpecError,
    StoreUnavailable,
    connect_redis,
    load_spec,
    slugify,
    specstore,
)
from reaper import Reason, end_session

from .admin.ops import clean_reason
from .fleetcli import CliError, redis_url

EXIT_NOT_DONE = 1
EXIT_USAGE = 2


class NotDone(Exception):
    """Nothing to do for what was asked (USER has no session): exit 1, one line."""


def _spec_file(settings: Any) -> FleetSpec:
    try:
        return load_spec(settings.fleet)
    except SpecError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"SDB_FLEET: {settings.fleet}: {exc.strerror}") from None


async def _profiles(redis: Any, settings: Any) -> list[str]:
    """The running spec's profiles (a removed profile's sessions end with it), else the
    SDB_FLEET file's before any broker stored a spec."""
    stored = await specstore.read(redis)
    if stored is not None:
        try:
            return [p.name for p in specstore.check(stored.text, None, "<running spec>").profiles]
        except SpecError:
            pass  # the file's names then; a broker would not run this spec either
    return [p.name for p in _spec_file(settings).profiles]


async def sessions(settings: Any, now: float) -> list[dict[str, Any]]:
    """Every session now, oldest first: the API's /sessions fields, without `busy`
    (that asks each WebUI, which only a broker can reach)."""
    redis = connect_redis(redis_url(settings))
    try:
        store = FleetStore(redis)
        pods = await store.pods(await _profiles(redis, settings))
        claimed = [p for p in pods if p.state is PodState.CLAIMED and p.user]
        seen = await store.last_activity([p.user for p in claimed])
    finally:
        await redis.aclose()
    rows = []
    for pod in sorted(claimed, key=lambda p: p.claimed_at):
        last = seen.get(pod.user)
        rows.append(
            {
                "user": pod.user,
                "pod": pod.id,
                "profile": pod.profile,
                "since": pod.claimed_at,
                "age_seconds": round(max(0.0, now - pod.claimed_at), 1),
                "last_activity": last,
                "idle_seconds": round(max(0.0, now - last), 1) if last is not None else None,
            }
        )
    return rows


def shown(text: str) -> str:
    """TEXT safe on a terminal: a user name comes from an identity provider or a header,
    and an escape sequence in it must not drive the admin's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def duration(seconds: float | None) -> str:
    """`42s`, `12m`, `3h05m`, `2d04h`: what a person reads at a glance."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no sessions"
    head = ["USER", "PROFILE", "POD", "SINCE (UTC)", "AGE", "IDLE"]
    body = [
        [
            shown(r["user"]),
            shown(r["profile"]),
            shown(r["pod"]),
            datetime.fromtimestamp(r["since"], UTC).strftime("%Y-%m-%d %H:%M"),
            duration(r["age_seconds"]),
            duration(r["idle_seconds"]),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    )


async def list_sessions(settings: Any, *, as_json: bool) -> int:
    rows = await sessions(settings, time.time())
    print(json.dumps(rows, indent=2) if as_json else table(rows))
    return 0


async def end(settings: Any, user: str, reason: str = "") -> int:
    """End USER's session as the console's Reclaim does (ops.reclaim): the pod is
    deleted, the user is told on their next page, the audit names who asked and why."""
    by = f"cli:{getpass.getuser()}"
    reason = clean_reason(reason)
    redis = connect_redis(redis_url(settings))
    try:
        store = FleetStore(redis)
        claim = await store.lookup(user)
        ended = claim is not None and await end_session(
            store, user, Reason.ADMIN, by=by, detail=reason
        )
        if claim is None or not ended:
            raise NotDone(f"{shown(user)} has no session")
        await store.audit(action="reclaim", user=user, by=by, detail=reason)
    finally:
        await redis.aclose()
    print(f"ended the session of {shown(user)} on {shown(claim.pod)} ({shown(claim.profile)})")
    return 0


def outputs(settings: Any, user: str) -> int:
    """Where USER's images are: the slug (fleet/slug.py) under each profile's outputs
    (the file's `outputs:` on one machine, the outputs volume's root on Kubernetes)."""
    spec = _spec_file(settings)
    slug = slugify(user)
    if spec.backend == "local":
        # Resolved from here, as the broker resolves it from its own working directory.
        print(Path(spec.outputs).resolve() / slug)
        return 0
    places: dict[str, list[str]] = {}
    for p in spec.profiles:
        pod = p.kubernetes or p.agones
        volume = pod.volumes.outputs if pod else None
        where = (
            f"{volume.path}/{slug} (folder {slug}/ at the root of PersistentVolumeClaim {volume.claim})"
            if volume
            else "none: this profile mounts no outputs volume"
        )
        places.setdefault(where, []).append(p.name)
    for where, names in places.items():
        print(where if len(places) == 1 else f"{', '.join(names)}: {where}")
    return 0


def run(work: Callable[[], Any]) -> int:
    """One line and an exit code for every failure; never a traceback."""
    try:
        result = work()
        return int(asyncio.run(result) if asyncio.iscoroutine(result) else result)
    except (CliError, RedisConfigError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except NotDone as exc:
        print(exc, file=sys.stderr)
        return EXIT_NOT_DONE
    except (StoreUnavailable, RedisError, OSError) as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, PasswordFileUnreadable):  # a setting to fix, not Redis down
            print(cause, file=sys.stderr)
            return EXIT_USAGE
        print(f"cannot reach Redis: {cause}", file=sys.stderr)
        return EXIT_NOT_DONE


def add_commands(sub: argparse._SubParsersAction, load_settings: Callable[[], Any]) -> None:
    """Register `sessions list|end` and `user outputs` (cli.build_parser)."""
    group = sub.add_parser("sessions", help="who holds which WebUI; end one")
    commands = group.add_subparsers(dest="sessions_command", required=True)
    ls = commands.add_parser("list", help="every session: user, profile, pod, since, idle")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=lambda a: run(lambda: list_sessions(load_settings(), as_json=a.json)))
    stop = commands.add_parser(
        "end", help="end USER's session now, as the console's Reclaim (the pod is deleted)"
    )
    stop.add_argument("user")
    stop.add_argument("--reason", default="", help="why, kept in the audit entry")
    stop.set_defaults(func=lambda a: run(lambda: end(load_settings(), a.user, a.reason)))
    person = sub.add_parser("user", help="about one person").add_subparsers(
        dest="user_command", required=True
    )
    out = person.add_parser("outputs", help="print USER's outputs folder (a slug with a hash)")
    out.add_argument("user")
    out.set_defaults(func=lambda a: run(lambda: outputs(load_settings(), a.user)))
