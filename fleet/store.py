"""The fleet's Redis index: pods by state, claims, activity, audit.

Every state change that must not race is one Lua call (fleet/lua/); reads are
plain commands, pipelined, except the whole-fleet read (pods.lua: one JSON
text instead of thousands of values to parse in Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from . import keys
from .errors import StoreUnavailable
from .model import Candidate, Claim, Ended, Go, PodInfo, PodRecord, PodState, Waiting
from .scripts import Scripts

Clock = Callable[[], float]

AUDIT_MAXLEN = 10_000
PODS_PER_READ = 100  # pod hashes per pods.lua call: Redis is held ~1 ms, not ~5 ms for 500
STRIKES_FIELD = "reap_strikes"  # pod hash field: busy probes in a row without an answer
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


_SET_STATES = (PodState.WARMING, PodState.READY, PodState.CLAIMED)  # keys.pod_states' order


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class FleetStore:
    """Redis state of the fleet. Constructing it does no I/O."""

    def __init__(self, redis: Redis, *, clock: Clock = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self.scripts = Scripts.register(redis)
        #: Called on every new claim with (profile, seconds waited in the queue or None);
        #: metrics use it, so it must not block.
        self.on_claim: Callable[[str, float | None], None] | None = None

    # --- claims -------------------------------------------------------------

    async def claim(
        self,
        user: str,
        profile: str,
        *,
        queue_grace: float,
        join_queue: bool = True,
        reserve: bool = False,
        unless_ended: bool = False,
    ) -> Claim | Waiting | Go:
        """Existing claim, a new claim on a Ready pod, or the user's place in the queue.

        `reserve` (backends that allocate): `Go` instead of taking a pod when
        the user may have one now; the caller allocates and calls `bind`.
        `unless_ended`: Waiting(ended=True), and nothing claimed, while the user
        has an unread "session ended" notice and no claim (see `unread_ended`).
        """
        result = await self.scripts.claim(
            keys=[
                keys.STATE_MARKER,
                keys.claim(user),
                keys.ready(profile),
                keys.claimed(profile),
                keys.ACTIVITY,
                keys.queue(profile),
                keys.queue_seen(profile),
                keys.ended(user),
            ],
            args=[
                user,
                profile,
                repr(self.clock()),
                keys.POD_PREFIX,
                queue_grace,
                keys.EVENTS,
                "1" if join_queue else "0",
                "1" if reserve else "0",
                "1" if unless_ended else "0",
            ],
        )
        kind = result[0]
        if kind == "ended":
            return Waiting(profile, 0, 0, ended=True)
        if kind == "go":
            return Go(profile, result[1] or "")
        if kind == "rebuilding":
            return Waiting(profile, 0, 0, rebuilding=True)
        if kind == "wait":
            return Waiting(profile, int(result[1]), int(result[2]))
        return self._claim_from(user, profile, kind, result[1:], self.clock())

    async def bind(self, user: str, rec: PodRecord) -> Claim | Waiting | None:
        """Record that the platform gave `user` the pod `rec` (bind.lua).

        Returns the new claim, the user's existing claim (maybe on another pod:
        `rec` is then an orphan), Waiting(rebuilding), or None when the pod is
        being deleted or belongs to someone else.
        """
        now = self.clock()
        result = await self.scripts.bind(
            keys=[
                keys.STATE_MARKER,
                keys.claim(user),
                keys.pod(rec.id),
                *keys.pod_states(rec.profile)[:2],
                keys.claimed(rec.profile),
                keys.ACTIVITY,
                keys.queue(rec.profile),
                keys.queue_seen(rec.profile),
            ],
            args=[
                user,
                rec.profile,
                rec.id,
                rec.addr,
                repr(now),
                repr(rec.created or now),
                keys.EVENTS,
                repr(rec.claimed_at or now),
            ],
        )
        kind = result[0]
        if kind == "rebuilding":
            return Waiting(rec.profile, 0, 0, rebuilding=True)
        if kind == "gone":
            return None
        return self._claim_from(user, rec.profile, kind, result[1:], now)

    def _claim_from(
        self, user: str, profile: str, kind: str, pairs: list[str], now: float
    ) -> Claim:
        """The claim a script answered; a new one carries how long its user waited in line."""
        data = _pairs(pairs)
        claim = Claim.from_hash(user, data, new=kind == "new")
        if claim.new:
            queued = data.get("queued_at")
            waited = max(0.0, now - float(queued)) if queued else None
            claim.waited = waited or 0.0
            if self.on_claim is not None:
                self.on_claim(profile, waited)
        return claim

    async def join_queue(self, user: str, profile: str) -> Waiting:
        """Queue a user whose allocation found nothing Ready (first come, first served)."""
        now = self.clock()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.queue(profile), {user: now}, nx=True)
            pipe.zadd(keys.queue_seen(profile), {user: now})
            pipe.zrank(keys.queue(profile), user)
            pipe.zcard(keys.queue(profile))
            added, _, rank, length = await pipe.execute()
        if added:
            await self.publish(f"queue {profile} {user}")
        return Waiting(profile, int(rank or 0) + 1, int(length))

    async def lock_user(self, user: str, token: str, ttl: float) -> bool:
        """A short per-user lock: one broker allocates for a user at a time."""
        return bool(await self.redis.set(keys.allocating(user), token, nx=True, px=int(ttl * 1000)))

    async def unlock_user(self, user: str, token: str) -> None:
        await self.scripts.unlock(keys=[keys.allocating(user)], args=[token])

    async def mark_bound(self, claim: Claim) -> bool:
        """The claimer is done preparing the pod: people may be sent to it (bound.lua)."""
        done = await self.scripts.bound(keys=[keys.claim(claim.user)], args=[claim.pod])
        claim.binding = False
        return bool(done)

    async def lookup(self, user: str) -> Claim | None:
        data = await self.redis.hgetall(keys.claim(user))
        return Claim.from_hash(user, data) if data else None

    async def leave_queue(self, user: str, profile: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.queue(profile), user)
            pipe.zrem(keys.queue_seen(profile), user)
            await pipe.execute()

    async def drop_gone_waiters(self, profile: str, grace: float) -> list[str]:
        """Forget the profile's waiting users unseen for longer than `grace` (drop_waiters.lua).

        Run by the controller on every pass, so a closed tab stops counting toward
        the target even when nobody else claims from that profile.
        """
        gone = await self.scripts.drop_waiters(
            keys=[keys.queue(profile), keys.queue_seen(profile)],
            args=[repr(self.clock() - grace), keys.EVENTS, profile],
        )
        return [str(user) for user in gone]

    async def see_waiting(self, user: str, profile: str) -> tuple[int, int] | None:
        """A waiting user is still there (an open events stream): keep their place.

        Returns (1-based position, queue length), or None when they are no
        longer queued (they lost their place, or a claim took them out).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.queue_seen(profile), {user: self.clock()}, xx=True)
            pipe.zrank(keys.queue(profile), user)
            pipe.zcard(keys.queue(profile))
            _, rank, length = await pipe.execute()
        return None if rank is None else (rank + 1, length)

    async def queue_members(self, profile: str) -> list[tuple[str, float, float]]:
        """(user, joined, last seen) of everyone waiting for `profile`, first come first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.queue(profile), 0, -1, withscores=True)
            pipe.zrange(keys.queue_seen(profile), 0, -1, withscores=True)
            joined, seen = await pipe.execute()
        last = dict(seen)
        return [(user, at, last.get(user, at)) for user, at in joined]

    async def choice(self, user: str) -> str | None:
        """The profile the user picked last time (several profiles), if any."""
        return await self.redis.get(keys.profile_choice(user))

    async def set_choice(self, user: str, profile: str, ttl: float) -> None:
        await self.redis.set(keys.profile_choice(user), profile, ex=max(1, int(ttl)))

    # --- pods ---------------------------------------------------------------

    async def add_pod(self, pod_id: str, profile: str, max_pods: int, **fields: str) -> bool:
        """Record a warming pod before the backend starts it; False when at max."""
        flat: list[str] = ["id", pod_id, "profile", profile]
        for name, value in fields.items():
            flat += [name, value]
        added = await self.scripts.add_pod(
            keys=[
                keys.pod(pod_id),
                keys.warming(profile),
                keys.ready(profile),
                keys.claimed(profile),
            ],
            args=[max_pods, repr(self.clock()), *flat],
        )
        return bool(added)

    async def mark_ready(self, pod_id: str, profile: str, addr: str) -> bool:
        done = await self.scripts.mark_ready(
            keys=[keys.pod(pod_id), keys.warming(profile), keys.ready(profile)],
            args=[pod_id, repr(self.clock()), addr, keys.EVENTS],
        )
        return bool(done)

    async def end_pod(
        self,
        pod_id: str,
        reason: str,
        *,
        only_state: str = "",
        only_user: str = "",
        idle_since: float | None = None,
    ) -> Ended | None:
        """Take a pod out of service (and end its claim); None if already ending or not matching.

        `idle_since`: only when the user's last recorded activity is at or
        before it (the reaper's guard against activity flushed since it looked).
        """
        result = await self.scripts.end_pod(
            keys=[keys.pod(pod_id), keys.DELETING, keys.ACTIVITY],
            args=[
                pod_id,
                repr(self.clock()),
                reason,
                only_state,
                only_user,
                keys.CLAIM_PREFIX,
                keys.PREFIX,
                keys.EVENTS,
                "" if idle_since is None else repr(idle_since),
            ],
        )
        if not int(result[0]):
            return None
        return Ended(pod_id, result[1], result[2], float(result[3] or 0))

    async def forget_pod(self, pod_id: str) -> None:
        await self.scripts.forget_pod(
            keys=[keys.pod(pod_id), keys.DELETING], args=[pod_id, keys.PREFIX]
        )

    async def set_pod_fields(self, pod_id: str, **fields: str) -> None:
        await self.redis.hset(keys.pod(pod_id), mapping=fields)

    async def pod(self, pod_id: str) -> PodInfo | None:
        data = await self.redis.hgetall(keys.pod(pod_id))
        return PodInfo.from_hash(data) if data else None

    async def pods(self, profiles: Iterable[str]) -> list[PodInfo]:
        """Every pod the index knows of these profiles, plus those being deleted."""
        return await self.pods_by_id(sorted(await self.pod_states(profiles)))

    async def pod_states(self, profiles: Iterable[str]) -> dict[str, tuple[str, PodState]]:
        """pod id -> (profile, state) of every pod of these profiles, plus those being
        deleted (profile "" unless still in a state set), from the state sets alone: all
        a controller pass needs of most pods, without reading each one's hash."""
        names = list(profiles)
        async with self.redis.pipeline(transaction=True) as pipe:  # one moment's picture
            for profile in names:
                for key in keys.pod_states(profile):
                    pipe.zrange(key, 0, -1)
            pipe.smembers(keys.DELETING)
            groups = await pipe.execute()
        found: dict[str, tuple[str, PodState]] = {}
        for i, profile in enumerate(names):
            for state, group in zip(_SET_STATES, groups[3 * i : 3 * i + 3], strict=True):
                for pod_id in group:
                    found[pod_id] = (profile, state)
        for pod_id in groups[-1]:
            found[pod_id] = (found.get(pod_id, ("", PodState.DELETING))[0], PodState.DELETING)
        return found

    async def pods_by_id(self, ids: list[str]) -> list[PodInfo]:
        """These pods' hashes (those that still have one), in the order given."""
        texts = await asyncio.gather(
            *(
                self.scripts.pods(args=[keys.POD_PREFIX, *ids[i : i + PODS_PER_READ]])
                for i in range(0, len(ids), PODS_PER_READ)
            )
        )
        return [PodInfo.from_hash(h) for text in texts for h in json.loads(text)]

    async def deleting(self) -> set[str]:
        return set(await self.redis.smembers(keys.DELETING))

    async def counts(self, profile: str) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys.pod_states(profile):
                pipe.zcard(key)
            pipe.zcard(keys.queue(profile))
            warming, ready, claimed, queued = await pipe.execute()
        return {"warming": warming, "ready": ready, "claimed": claimed, "queue": queued}

    async def oldest_ready(self, profile: str, count: int) -> list[str]:
        return list(await self.redis.zrange(keys.ready(profile), 0, count - 1)) if count > 0 else []

    # --- rebuilding from the backend's records --------------------------------

    async def is_built(self) -> bool:
        return bool(await self.redis.exists(keys.STATE_MARKER))

    async def restore(
        self, records: Iterable[PodRecord], *, mark_built: bool
    ) -> tuple[int, list[str]]:
        """Write pods (and their claims) the index lacks, from the backend's records.

        Used at start-up to adopt pods and after Redis lost its data; one atomic
        script (fleet/lua/restore.lua). Returns how many were restored and the
        pods that conflict with a claim the index already has (to be ended).
        """
        now = self.clock()
        payload = [
            {
                "id": rec.id,
                "profile": rec.profile,
                "state": str(
                    PodState.CLAIMED
                    if rec.user
                    else PodState.READY
                    if rec.phase == "ready"
                    else PodState.WARMING
                ),
                "addr": rec.addr,
                "created": repr(rec.created or now),
                "user": rec.user,
                "since": repr(rec.claimed_at or now),
                "fields": dict(rec.extra),
            }
            for rec in records
        ]
        result = await self.scripts.restore(
            keys=[keys.STATE_MARKER, keys.ACTIVITY],
            args=[json.dumps(payload), repr(now), keys.PREFIX, "1" if mark_built else "0"],
        )
        return int(result[0]), [str(pod) for pod in result[1:]]

    async def mark_built(self) -> None:
        await self.redis.set(keys.STATE_MARKER, repr(self.clock()))

    # --- activity, audit, events ---------------------------------------------

    async def touch(self, seen: Mapping[str, float]) -> None:
        """Record last activity for claimed users in one command (never for released ones)."""
        if seen:
            await self.redis.zadd(keys.ACTIVITY, dict(seen), xx=True, gt=True)

    async def audit(self, **event: str | float | int) -> None:
        fields = {k: str(v) for k, v in event.items()}
        await self.redis.xadd(keys.AUDIT, fields, maxlen=AUDIT_MAXLEN, approximate=True)

    async def note_ended(self, user: str, notice: Mapping[str, object], ttl: float) -> None:
        await self.redis.set(keys.ended(user), json.dumps(dict(notice)), ex=max(1, int(ttl)))

    async def pop_ended(self, user: str) -> dict[str, object] | None:
        raw = await self.redis.getdel(keys.ended(user))
        return json.loads(raw) if raw else None

    async def last_activity(self, users: list[str]) -> dict[str, float]:
        """Last recorded activity of each user that has one."""
        scores = await self.redis.zmscore(keys.ACTIVITY, users) if users else []
        return {u: float(s) for u, s in zip(users, scores, strict=True) if s is not None}

    async def recent_audit(self, count: int = 50) -> list[dict[str, str]]:
        """The newest audit events (reclaims, admin actions), newest first."""
        entries = await self.redis.xrevrange(keys.AUDIT, count=count)
        return [{"id": entry_id, **fields} for entry_id, fields in entries]

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

    # --- reaping --------------------------------------------------------------

    async def reap_candidates(
        self,
        idle_cutoff: float,
        *,
        session_cutoff: float | None = None,
        profiles: Iterable[str] = (),
        limit: int = 1000,
    ) -> tuple[int, list[Candidate]]:
        """(sessions in the activity index, candidates) in one call: O(candidates), no scan.

        Idle: last activity at or before `idle_cutoff`. Expired (only when
        `session_cutoff` is given): claimed at or before it, in `profiles`.
        Busy: found generating by the last cycle (`note_busy`), neither of those.
        """
        claimed = [keys.claimed(p) for p in profiles] if session_cutoff is not None else []
        flat = await self.scripts.reap_candidates(
            keys=[keys.ACTIVITY, keys.BUSY, *claimed],
            args=[
                repr(idle_cutoff),
                "" if session_cutoff is None else repr(session_cutoff),
                limit,
                keys.CLAIM_PREFIX,
                keys.POD_PREFIX,
            ],
        )
        size = Candidate.FIELDS
        rows = flat[1:]
        return int(flat[0]), [
            Candidate.from_flat(rows[i : i + size]) for i in range(0, len(rows), size)
        ]

    async def note_busy(
        self, seen: Mapping[str, float], busy: Mapping[str, str], done: Iterable[str]
    ) -> None:
        """One round trip: activity `seen` (users -> when), sessions found generating
        (`busy`: user -> pod) and those whose generation has ended (`done`)."""
        done = list(done)
        async with self.redis.pipeline(transaction=False) as pipe:
            if seen:
                pipe.zadd(keys.ACTIVITY, dict(seen), xx=True, gt=True)
            if busy:
                pipe.hset(keys.BUSY, mapping=dict(busy))
            if done:
                pipe.hdel(keys.BUSY, *done)
            await pipe.execute()

    async def drop_claim(self, user: str, pod_id: str) -> int:
        """Forget a claim whose pod is gone (`pod_id` "" = a stray activity entry).

        Compare-and-delete: 1 claim dropped, 2 stray activity dropped, 0 nothing stale.
        """
        return int(
            await self.scripts.drop_claim(
                keys=[keys.claim(user), keys.ACTIVITY],
                args=[user, pod_id, keys.POD_PREFIX, keys.EVENTS],
            )
        )

    async def strike(self, pod_id: str) -> int:
        """One more busy probe without an answer; the new count (-1: the pod record is gone)."""
        return int(await self.scripts.strike(keys=[keys.pod(pod_id)], args=[STRIKES_FIELD]))

    async def clear_strikes(self, pod_ids: Iterable[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pod_id in pod_ids:
                pipe.hdel(keys.pod(pod_id), STRIKES_FIELD)
            await pipe.execute()

    async def record_reclaim(
        self,
        event: Mapping[str, str | float | int],
        notice: Mapping[str, object] | None,
        notice_ttl: float,
    ) -> None:
        """Audit a reclaim and leave the user a notice, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                keys.AUDIT,
                {k: str(v) for k, v in event.items()},
                maxlen=AUDIT_MAXLEN,
                approximate=True,
            )
            if notice is not None:
                user = str(event["user"])
                pipe.set(keys.ended(user), json.dumps(dict(notice)), ex=max(1, int(notice_ttl)))
            await pipe.execute()

    async def publish(self, message: str) -> None:
        await self.redis.publish(keys.EVENTS, message)

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except REDIS_DOWN as exc:
            raise StoreUnavailable(f"Redis unreachable: {exc}") from exc
