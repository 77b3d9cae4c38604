"""The admin's reads and actions, shared by the console and the JSON API.

Reads come from Redis (so every replica shows the same fleet) and are
cheap enough for a page load; "busy now" asks each claimed WebUI's progress
API concurrently with a short timeout. Actions go through the same fleet
calls as the reaper and the controller, and each is written to the audit
stream with the admin's name.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

from fleet import PodInfo, PodState, Profile, SizeError, make_probe, start_health
from reaper import Reason, end_session

from ..appkeys import AUTH, AUTOSCALER, FLEET, HISTORY, HTTP, ROUTER, STORE
from .models import (
    AuditView,
    Done,
    HistoryView,
    OverrideView,
    PodView,
    ProfileView,
    SampleView,
    SessionView,
    Sizes,
    WaiterView,
)

BUSY_TIMEOUT = 2.0
REASON_MAX = 200  # end_pod.lua's tell cuts its detail there too (fleet/notices.py)


def sizes_of(profile: Profile) -> Sizes:
    return Sizes(min=profile.min, buffer=profile.buffer, max=profile.max)


async def profiles(app: web.Application) -> list[ProfileView]:
    store, history = app[STORE], app[HISTORY]
    spec = app[FLEET].spec
    sizings = await app[AUTOSCALER].sizings(spec)
    names = [s.base.name for s in sizings]
    states = Counter((p.profile, str(p.state)) for p in await store.pods(names))
    starts = await start_health.read(store.redis, names)
    out = []
    for sizing in sizings:
        base = sizing.base
        waiting = (await store.counts(base.name))["queue"]
        times = await history.recent_starts(base.name)
        nxt = base.schedule[sizing.next_entry] if sizing.next_entry is not None else None
        over = sizing.override
        health = starts[base.name]
        out.append(
            ProfileView(
                name=base.name,
                display_name=base.display_name,
                gpu=base.gpu,
                allowed_groups=list(base.allowed_groups),
                max_session_seconds=spec.session_limit(base.name),
                warming=states[(base.name, "warming")],
                ready=states[(base.name, "ready")],
                claimed=states[(base.name, "claimed")],
                deleting=states[(base.name, "deleting")],
                queue=waiting,
                sizes=sizes_of(sizing.effective),
                file=sizes_of(base),
                schedule_entry=sizing.entry,
                scheduled_since=sizing.fired_at,
                override=OverrideView(
                    min=over.min, buffer=over.buffer, max=over.max, at=over.at, by=over.by
                )
                if over
                else None,
                next_change_at=sizing.next_at,
                next_change=sizes_of(base.with_schedule(nxt)) if nxt else None,
                typical_start_seconds=sorted(times)[len(times) // 2] if times else None,
                start_failures_in_row=health.failures_in_row,
                failing=health.failing,
                last_start_error=health.last_error or None,
                last_start_failure_at=health.last_failure_at,
            )
        )
    return out


def place(pod: PodInfo) -> dict[str, str | None]:
    """Where a pod runs, as far as its backend says: the node (Kubernetes and Agones
    record `spec.nodeName` once scheduled: fleet/backends/kubepods.py, agones.py) and the
    local backend's GPU slot (its `CUDA_VISIBLE_DEVICES`: fleet/backends/local.py, whose
    record says "None" or "" for a profile without `gpus`)."""
    slot = pod.extra.get("slot", "")
    return {"node": pod.extra.get("node") or None, "gpu_slot": slot if slot.isdigit() else None}


async def _busy(app: web.Application, pod: PodInfo) -> bool | None:
    try:
        profile = app[FLEET].spec.profile(pod.profile)
        return await asyncio.wait_for(
            make_probe(profile.probe).busy(app[HTTP], pod.addr), BUSY_TIMEOUT
        )
    except (KeyError, TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def sessions(app: web.Application, *, busy: bool = True) -> list[SessionView]:
    store = app[STORE]
    now = store.clock()
    claimed = [
        p
        for p in await store.pods(p.name for p in app[FLEET].spec.profiles)
        if p.state is PodState.CLAIMED and p.user
    ]
    seen = await store.last_activity([p.user for p in claimed])
    probes = (
        await asyncio.gather(*(_busy(app, p) for p in claimed)) if busy else [None] * len(claimed)
    )
    out = []
    for pod, is_busy in zip(claimed, probes, strict=True):
        last = seen.get(pod.user)
        out.append(
            SessionView(
                user=pod.user,
                pod=pod.id,
                profile=pod.profile,
                since=pod.claimed_at,
                age_seconds=max(0.0, now - pod.claimed_at),
                last_activity=last,
                idle_seconds=max(0.0, now - last) if last is not None else None,
                busy=is_busy,
                **place(pod),
            )
        )
    return sorted(out, key=lambda s: s.since)


async def pods(app: web.Application) -> list[PodView]:
    found = await app[STORE].pods(p.name for p in app[FLEET].spec.profiles)
    return [
        PodView(
            id=p.id,
            profile=p.profile,
            state=str(p.state),
            user=p.user,
            created=p.created,
            ready_at=p.ready_at,
            claimed_at=p.claimed_at,
            **place(p),
        )
        for p in sorted(found, key=lambda p: (p.profile, p.created))
    ]


async def queue(app: web.Application) -> list[WaiterView]:
    store = app[STORE]
    now = store.clock()
    out = []
    for profile in app[FLEET].spec.profiles:
        for index, (user, joined, seen, priority) in enumerate(
            await store.queue_members(profile.name)  # in serving order (priority, join time)
        ):
            out.append(
                WaiterView(
                    user=user,
                    profile=profile.name,
                    position=index + 1,
                    priority=priority,
                    joined=joined,
                    waiting_seconds=max(0.0, now - joined),
                    seen_seconds_ago=max(0.0, now - seen),
                )
            )
    return out


#: Audit reasons that name a user but end nobody's session (fleet/reconcile.py: a claim
#: put back into the index after Redis lost it).
NOT_AN_END = frozenset({"reattached"})
#: Actions whose session end has its own entry (written by end_pod.lua), not listed twice.
LISTED_AS_END = frozenset({"reclaim"})
AUDIT_READ = 200  # newest audit entries read for the console's two lists


def is_session_end(event: dict[str, str]) -> bool:
    """An entry that ended someone's session: a reason and a user (end_pod.lua's _tell,
    the reconciler's `superseded`); not a repair, a fleet event or an admin action."""
    return bool(event.get("reason") and event.get("user")) and event["reason"] not in NOT_AN_END


def _view(e: dict[str, str]) -> AuditView:
    fields = {k: e.get(k, "") for k in ("user", "pod", "profile", "reason", "by", "detail")}
    if not fields["reason"]:
        fields["reason"] = e.get("action", "")
    if not fields["detail"] and e.get("token"):
        fields["detail"] = f"token {e['token']}"
    return AuditView(id=e["id"], at=_event_time(e), **fields)


async def reclaims(app: web.Application, count: int = 30) -> list[AuditView]:
    """Sessions that ended lately (reaper, controller, proxy, admins, users), newest first."""
    events = await app[STORE].recent_audit(max(AUDIT_READ, count * 4))
    return [_view(e) for e in events if is_session_end(e)][:count]


async def other_events(app: web.Application, count: int = 10) -> list[AuditView]:
    """Everything else lately: admin actions, pods deleted, repairs of the index, size
    overrides dropped by a new fleet file; newest first. `reason` is the action."""
    events = await app[STORE].recent_audit(AUDIT_READ)
    kept = [e for e in events if not is_session_end(e) and e.get("action") not in LISTED_AS_END]
    return [_view(e) for e in kept][:count]


def _event_time(event: dict[str, str]) -> float | None:
    """The event's own `at`, else the stream id's milliseconds (events without one)."""
    try:
        if event.get("at"):
            return float(event["at"])
        return int(event["id"].split("-")[0]) / 1000
    except ValueError:
        return None


async def history(app: web.Application, hours: float = 6.0) -> list[HistoryView]:
    since = app[STORE].clock() - hours * 3600
    out = []
    for profile in app[FLEET].spec.profiles:
        samples = await app[HISTORY].series(profile.name, since)
        out.append(
            HistoryView(
                profile=profile.name,
                samples=[
                    SampleView(
                        at=s.at, warming=s.warming, ready=s.ready, claimed=s.claimed, queue=s.queue
                    )
                    for s in samples
                ],
            )
        )
    return out


def clean_reason(reason: str) -> str:
    """An admin's free-text reason for the audit entry: one line of printable text, at
    most REASON_MAX characters."""
    printable = "".join(c if c.isprintable() else " " for c in reason)
    return " ".join(printable.split())[:REASON_MAX]


async def reclaim(app: web.Application, user: str, by: str, reason: str = "") -> Done:
    """End a user's session now; their pod is deleted (single-use) and they are told why.
    REASON (the admin's words) is the audit entry's `detail`."""
    reason = clean_reason(reason)
    if not await end_session(app[STORE], user, Reason.ADMIN, by=by, detail=reason):
        return Done(ok=False, detail=f"{user} has no session")
    app[ROUTER].forget(user)
    await app[STORE].audit(action="reclaim", user=user, by=by, detail=reason)
    return Done(ok=True, detail=f"reclaimed the session of {user}")


async def block(app: web.Application, user: str, by: str, reason: str = "") -> Done:
    """Block USER from WebUIs: no new session for them until unblocked, and their session
    now ends (reason admin, detail "blocked"). Logins are kept: their own pages (home,
    gallery) still open and say they are blocked."""
    reason = clean_reason(reason)
    store = app[STORE]
    if not await store.block(user):
        return Done(ok=False, detail=f"{user} is blocked already")
    # Listed first, then ended: a claim racing the block either sees the list or is ended.
    ended = await end_session(store, user, Reason.ADMIN, by=by, detail="blocked")
    app[ROUTER].forget(user)
    await store.audit(action="block", user=user, by=by, detail=reason)
    return Done(ok=True, detail=f"blocked {user}" + ("; their session ended" if ended else ""))


async def unblock(app: web.Application, user: str, by: str) -> Done:
    """Let USER start WebUIs again."""
    if not await app[STORE].unblock(user):
        return Done(ok=False, detail=f"{user} is not blocked")
    await app[STORE].audit(action="unblock", user=user, by=by)
    return Done(ok=True, detail=f"unblocked {user}")


async def log_out(app: web.Application, user: str, by: str) -> Done:
    """End every login of a user on every replica (their WebUI stays theirs: see reclaim)."""
    ended = await app[AUTH].revoke_user(user)
    if ended is None:
        return Done(
            ok=False,
            detail="this login mode keeps no logins to end: end them at the proxy or identity provider",
        )
    if not ended:
        return Done(ok=False, detail=f"{user} has no login")
    await app[STORE].audit(action="logout", user=user, by=by, sessions=str(ended))
    return Done(ok=True, detail=f"logged {user} out ({ended} login{'s' if ended != 1 else ''})")


async def delete_pod(app: web.Application, pod_id: str, by: str, reason: str = "") -> Done:
    """Delete a pod; a claimed pod's session ends as an admin reclaim. REASON: as reclaim's."""
    reason = clean_reason(reason)
    store = app[STORE]
    pod = await store.pod(pod_id)
    if pod is None or pod.state is PodState.DELETING:
        return Done(ok=False, detail=f"no pod {pod_id} (or it is already being deleted)")
    if pod.state is PodState.CLAIMED and pod.user:
        claim = await store.lookup(pod.user)
        if claim is not None and claim.pod == pod_id:
            why = f"pod deleted: {reason}" if reason else "pod deleted"
            done = await reclaim(app, pod.user, by, why)
            return Done(ok=done.ok, detail=f"deleted pod {pod_id}; {done.detail}")
    ended = await store.end_pod(pod_id, str(Reason.ADMIN))
    if ended is None:
        return Done(ok=False, detail=f"pod {pod_id} changed meanwhile; try again")
    await store.audit(
        pod=pod_id,
        profile=ended.profile,
        reason=str(Reason.ADMIN),
        by=by,
        detail=f"pod deleted: {reason}" if reason else "pod deleted",
    )
    return Done(ok=True, detail=f"deleted pod {pod_id}")


async def set_sizes(
    app: web.Application,
    profile: str,
    by: str,
    *,
    buffer: int | str | None = None,
    min: int | None = None,
    max: int | None = None,
) -> Done:
    """Change a profile's sizes for now; KeyError for an unknown profile."""
    if buffer is None and min is None and max is None:
        return Done(ok=False, detail="give at least one of buffer, min, max")
    try:
        over = await app[AUTOSCALER].set_override(profile, buffer=buffer, min=min, max=max, by=by)
    except SizeError as exc:
        return Done(ok=False, detail=str(exc))
    sizes = ", ".join(
        f"{k} {v}"
        for k, v in (("min", over.min), ("buffer", over.buffer), ("max", over.max))
        if v is not None
    )
    await app[STORE].audit(action="sizes", profile=profile, by=by, detail=sizes)
    return Done(ok=True, detail=f"{profile}: {sizes} until the next schedule change")


async def clear_sizes(app: web.Application, profile: str, by: str) -> Done:
    removed = await app[AUTOSCALER].clear_override(profile)
    await app[STORE].audit(action="sizes", profile=profile, by=by, detail="override cleared")
    return Done(
        ok=True,
        detail=f"{profile}: back to the file and its schedule"
        if removed
        else f"{profile}: had no override",
    )
