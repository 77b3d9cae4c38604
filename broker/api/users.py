"""The API's people: who the broker has seen (with their session now) and how their
sessions ended, each paginated with an opaque cursor.

People come from the activity index (`keys.ACTIVITY`, user -> last real activity)
joined with the sessions now; session ends from the audit stream, whose ids
are the cursor (the stream keeps ~10,000 entries, so history is about a week
for 500 users: older ends are gone). GPU-minutes are summed from the same
stream (each end's `session_seconds` times its profile's GPUs per pod) plus the
session now, so they cover that week too. There is no "blocked" filter: the
broker has no block list (who may log in is SDB_ALLOWED_*, not a per-user flag).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from typing import cast

from aiohttp import web

from fleet import Claim, keys, redis_text

from ..admin import ops
from ..admin.models import Done, EndedPage, EndedView, UserPage, UserView
from ..appkeys import FLEET, REDIS, STORE
from ..gpu_time import gpu_minutes, usage_of

MAX_LIMIT = 500
SCAN_BATCH = 500
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
USER_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")


class BadInput(ValueError):
    """An admin's bad query: answered 400 with this message."""


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}")
    return int(raw)


def _time(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadInput(f"{name} must be unix seconds, not {raw!r}") from None


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false", "1", "0"):
        raise BadInput(f"{name} must be true or false, not {raw!r}")
    return raw.lower() in ("true", "1")


def _minutes(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{name} must be a number of minutes, 0 or more, not {raw!r}")
    return value


async def used_minutes(request: web.Request) -> dict[str, float]:
    """GPU-minutes per user over what the audit stream still holds (about a week) and
    the sessions now: the same sums as GET /usage?by=user."""
    found, gpus = await usage_of(request, 0.0, time.time(), "user")
    return {u.key: sum(gpu_minutes(u, gpus).values()) for u in found}


def encode_cursor(user: str) -> str:
    return base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadInput("cursor is not one this API gave out: pass back `next` as it came") from None


async def users(request: web.Request) -> UserPage:
    """People in name order after the cursor, filtered; O(people) per page, fine for thousands."""
    limit = _limit(request)
    has_session = _bool(request, "session")
    seen_after, seen_before = _time(request, "seen_after"), _time(request, "seen_before")
    only_blocked = _bool(request, "blocked")
    min_gpu = _minutes(request, "min_gpu_minutes")
    after = decode_cursor(request.query["cursor"]) if request.query.get("cursor") else None
    raw = await request.app[REDIS].zrange(keys.ACTIVITY, 0, -1, withscores=True)
    seen = dict(cast("list[tuple[str, float]]", raw))  # withscores: (member, score) pairs
    current = {s.user: s for s in await ops.sessions(request.app, busy=False)}
    used = await used_minutes(request)
    blocked = await request.app[STORE].blocked()
    out: list[UserView] = []
    for user in sorted(set(seen) | set(current) | blocked):
        if after is not None and user <= after:
            continue
        last = seen.get(user)
        if has_session is not None and (user in current) != has_session:
            continue
        if seen_after is not None and (last is None or last < seen_after):
            continue
        if seen_before is not None and (last is None or last >= seen_before):
            continue
        if min_gpu is not None and used.get(user, 0.0) < min_gpu:
            continue
        if only_blocked is not None and (user in blocked) != only_blocked:
            continue
        if len(out) == limit:
            return UserPage(users=out, next=encode_cursor(out[-1].user))
        minutes = round(used.get(user, 0.0), 3)
        out.append(
            UserView(
                user=user,
                last_seen=last,
                session=current.get(user),
                gpu_minutes=minutes,
                blocked=user in blocked,
            )
        )
    return UserPage(users=out, next=None)


async def start_session(request: web.Request, by: str, profile: str | None) -> Done:
    """Claim a warm pod for a user now, as their first page load would (JupyterHub's
    POST /users/{name}/server starts a server the same way). Never queues: no warm pod
    is a refusal. The user still reaches it only by logging in as themselves."""
    user = request.match_info["user"]
    if not USER_NAME.fullmatch(user):
        raise BadInput("user must be 1 to 256 printable characters without spaces")
    fleet = request.app[FLEET]
    if profile is not None and not any(p.name == profile for p in fleet.spec.profiles):
        return Done(ok=False, detail=f"no profile {profile!r}")
    if await request.app[STORE].is_blocked(user):
        return Done(ok=False, detail=f"{user} is blocked: unblock them first")
    existing = await fleet.lookup(user)
    if existing is not None:
        return Done(ok=False, detail=f"{user} already has a session on {existing.pod}")
    result = await fleet.claim(user, profile, join_queue=False)
    if not isinstance(result, Claim):
        return Done(ok=False, detail=f"no session started for {user}: {type(result).__name__} "
                                      "(no warm pod now; try again once one is Ready)")  # fmt: skip
    await request.app[STORE].audit(action="start", user=user, pod=result.pod, by=by)
    return Done(ok=True, detail=f"started a session for {user} on {result.pod} ({result.profile})")


async def ended_sessions(request: web.Request) -> EndedPage:
    """A user's ended sessions, newest first, from the audit stream after the cursor."""
    user = request.match_info["user"]
    limit = _limit(request, 50)
    cursor = request.query.get("cursor", "")
    if cursor and not STREAM_ID.fullmatch(cursor):
        raise BadInput("cursor is not one this API gave out: pass back `next` as it came")
    top = f"({cursor}" if cursor else "+"
    out: list[EndedView] = []
    while True:
        batch = redis_text.stream_entries(
            await request.app[REDIS].xrevrange(keys.AUDIT, max=top, min="-", count=SCAN_BATCH)
        )
        for entry_id, e in batch:
            if e.get("user") != user or not e.get("reason"):
                continue
            if len(out) == limit:
                return EndedPage(sessions=out, next=out[-1].id)
            fields = {k: e.get(k, "") for k in ("pod", "profile", "reason", "by", "detail")}
            out.append(EndedView(id=entry_id, at=_at(entry_id, e.get("at", "")), **fields))
        if len(batch) < SCAN_BATCH:
            return EndedPage(sessions=out, next=None)
        top = f"({batch[-1][0]}"


def _at(entry_id: str, at: str) -> float | None:
    try:
        return float(at) if at else int(entry_id.split("-")[0]) / 1000
    except ValueError:
        return None
