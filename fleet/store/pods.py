"""The pod index: each pod's hash and the state sets (warming, ready, claimed,
deleting); reads are pipelined, the whole-fleet read is pods.lua (one JSON text
instead of thousands of values to parse in Python)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

from .. import keys, redis_text
from ..model import Ended, PodInfo, PodState, groups_of
from ..notices import Tell
from ..packing import least_used_first
from .audit import AUDIT_MAXLEN
from .base import StoreBase

log = logging.getLogger(__name__)
PODS_PER_READ = 100  # pod hashes per pods.lua call: Redis is held ~1 ms, not ~5 ms for 500
_SET_STATES = (PodState.WARMING, PodState.READY, PodState.CLAIMED)  # keys.pod_states' order


class PodStore(StoreBase):
    """The pods the index knows, by state."""

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

    async def mark_ready(self, pod_id: str, profile: str, addr: str, node: str = "") -> bool:
        """Offer a warming pod for claims; `node`: where it runs (session lines, scale-down)."""
        done = await self.scripts.mark_ready(
            keys=[keys.pod(pod_id), keys.warming(profile), keys.ready(profile)],
            args=[pod_id, repr(self.clock()), addr, node],
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
        tell: Tell | None = None,
    ) -> Ended | None:
        """Take a pod out of service (and end its claim); None if already ending or not matching.

        `idle_since`: only when the user's last recorded activity is at or
        before it (the reaper's guard against activity flushed since it looked).
        `tell`: when the pod served a user, leave them the "session ended" notice
        and audit the end, in the same script (fleet/notices.py says why).
        """
        result = await self.scripts.end_pod(
            keys=[keys.pod(pod_id), keys.DELETING, keys.ACTIVITY, keys.SESSION_ENDS, keys.AUDIT],
            args=[
                pod_id,
                repr(self.clock()),
                reason,
                only_state,
                only_user,
                "" if idle_since is None else repr(idle_since),
                "" if tell is None else tell.encode(AUDIT_MAXLEN),
            ],
        )
        if not int(result[0]):
            return None
        user, profile, claimed_at, node, groups, slot = result[1:7]
        ended = Ended(pod_id, user, profile, float(claimed_at or 0), node, groups_of(groups), slot)
        if ended.user:  # end_pod.lua counted it (sdbroker_sessions_ended_total)
            self._log_session_end(ended, reason)
        return ended

    def _log_session_end(self, ended: Ended, reason: str) -> None:
        """One line per session end, its fields apart (`extra`): a log sink counts usage
        from these without reading Redis, whose audit stream keeps only the last ~10,000.
        Every GPU-minute is attributed: user, groups at claim time, profile, pod, node,
        GPU slot, start and end (the broker's SessionFilter adds the GPU kind and
        gpu_seconds from the fleet file, which the store does not read)."""
        end = self.clock()
        seconds = max(0.0, end - ended.claimed_at) if ended.claimed_at else 0.0
        log.info(
            "session of %s on pod %s ended (%s) after %.0fs",
            ended.user, ended.pod, reason, seconds,
            extra={"event": "session_end", "user": ended.user, "groups": list(ended.groups),
                   "profile": ended.profile, "pod": ended.pod, "node": ended.node,
                   "slot": ended.slot, "start": ended.claimed_at or None, "end": end,
                   "reason": reason, "seconds": round(seconds, 1)},
        )  # fmt: skip

    async def forget_pod(self, pod_id: str) -> None:
        await self.scripts.forget_pod(keys=[keys.pod(pod_id), keys.DELETING], args=[pod_id])

    async def set_pod_fields(self, pod_id: str, **fields: str) -> None:
        await self.redis.hset(keys.pod(pod_id), mapping=redis_text.fields(fields))

    async def pod(self, pod_id: str) -> PodInfo | None:
        data = await self.redis.hgetall(keys.pod(pod_id))
        return PodInfo.from_hash(redis_text.text_hash(data)) if data else None

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
                self.scripts.pods(args=ids[i : i + PODS_PER_READ])
                for i in range(0, len(ids), PODS_PER_READ)
            )
        )
        return [PodInfo.from_hash(h) for text in texts for h in json.loads(text)]

    async def deleting(self) -> set[str]:
        return set(redis_text.texts(await self.redis.smembers(keys.DELETING)))

    async def counts(self, profile: str) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys.pod_states(profile):
                pipe.zcard(key)
            pipe.zcard(keys.queue(profile))
            warming, ready, claimed, queued = await pipe.execute()
        return {"warming": warming, "ready": ready, "claimed": claimed, "queue": queued}

    async def retire_order(self, profile: str, count: int) -> list[str]:
        """COUNT Ready pods of PROFILE to retire: those on the least-used nodes first
        (fleet/packing.py). Reads the profile's Ready and claimed pods' hashes: a
        scale-down is rare, and it is one pods.lua call per 100 pods."""
        if count <= 0:
            return []
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(keys.ready(profile), 0, -1, withscores=True)
            pipe.zrange(keys.claimed(profile), 0, -1)
            ready, claimed = await pipe.execute()
        since = {redis_text.text(pod_id) or "": float(score) for pod_id, score in ready}
        found = await self.pods_by_id([*since, *redis_text.texts(claimed)])
        node = {p.id: p.extra.get("node", "") for p in found}
        warm = [(pod_id, node.get(pod_id, ""), at) for pod_id, at in since.items()]
        in_use = [node[p.id] for p in found if p.state is PodState.CLAIMED]
        return least_used_first(warm, in_use)[:count]
