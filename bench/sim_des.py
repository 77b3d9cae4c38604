"""A clock-free discrete-event model of the fleet under each policy: bench/sim.py's primary figures.

No scaled clock, no event loop: an event heap, so every interval is exact and
the result depends on the seed alone (no loop lag, no machine load). Every GPU
second is integrated exactly, by interval, into one of four kinds: warming
(started, not yet answering), warm (Ready, unclaimed: the buffer), claimed and
in use (interaction or a generation), claimed and idle.

The policies, as their sources do them:

- published (the seed, GoogleCloudPlatform/stable-diffusion-on-gcp at ac74b6a,
  Stable-Diffusion-UI-Agones/): a GameServer turns Ready once the WebUI answers
  (agones-sidecar/main.go polls :7860 for a 200, then `ready(s)`); a FleetAutoscaler
  Buffer policy synced every 30 s (agones/fleet_autoscale.yaml: replicas =
  allocated + bufferSize, as tests/kubeapi/autoscalers.py ports Agones v1.56.0);
  the GameServerSet replaces a deleted GameServer at once and on scale-down
  deletes not-yet-Ready ones first (tests/kubeapi/gameserversets.py, ported from
  `computeReconciliationAction`); no queue: nginx/sd.lua answers "Too many users,
  Please try later!" when an allocation finds no Ready GameServer, and the person
  reloads by hand (every `reload` s here: an assumption); `lastaccess` is set on every
  HTTP request (sd.lua, access_by_lua on every location of nginx/default.conf), and
  the cron "cruiser" (Cloud Scheduler `*/5 * * * *`, cloud-function/main.py) ends
  a session whose `lastaccess` is 900 s old, with no busy check.
- sdbroker: fleet/controller.py's target (claimed + waiting + buffer, Profile.target),
  acted on at each claim, release, queue join and pod Ready (the controller gathers
  them for 0.1 s: taken as instant); on scale-down the oldest Ready pods go, never
  a starting one; a FIFO waiting line served the moment a pod is Ready; the reaper
  every 30 s ends a session idle 15 min counted from the later of the last action
  and the end of the last generation, never one whose WebUI reports busy.
- sdbroker + presence (issue 19 section 2, built: a profile's `reclaim_when_gone`,
  reaper/policy.py `Policy.is_gone`): as sdbroker, and a session also ends `presence` s
  after the person's last tab closed and their last activity, unless a generation runs
  (the reaper refreshes activity while it finds one running, so the count starts again at
  its end). Only for the share `seen` of people whose tab the broker can see (ComfyUI's
  `/ws`, Forge's heartbeat stream, the broker's home page held open); the others keep
  the idle timeout alone (a1111 profiles have reclaim_when_gone off by default).
- oracle: knows every arrival and end of use: a fresh pod (single-use) started so that
  it answers the moment its person arrives, ended the moment their use ends.
"""

from __future__ import annotations

import heapq
import itertools
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .sim_workload import Visit, Workload

IDLE_TIMEOUT = 900.0
START = (60.0, 120.0)  # pod start, as KubeSim's start_delay


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # "published" | "sdbroker" | "oracle"
    reap_every: float = 30.0
    scale_every: float = 0.0  # published: the FleetAutoscaler's sync; 0 = on every event
    presence: float | None = None  # sdbroker: end a session this long after the last tab closed
    seen: float = 1.0  # presence: share of people whose tab the broker sees (by a hash of the name)
    reload: float = 60.0  # published: a person on "Too many users" reloads this often


PUBLISHED = Policy("published (seed: Buffer 30s sync, no queue, cron 5m)", "published", 300.0, 30.0)
SDBROKER = Policy("sdbroker (events, queue, reaper 30s, busy probe)", "sdbroker")
PRESENCE = Policy("sdbroker + reclaim_when_gone 2m, every tab seen", "sdbroker", presence=120.0)
PRESENCE_HALF = Policy(
    "sdbroker + reclaim_when_gone 2m, half the tabs seen", "sdbroker", presence=120.0, seen=0.5
)
ORACLE = Policy("oracle (knows arrivals and ends of use)", "oracle")


@dataclass
class Result:
    waits: list[float] = field(default_factory=list)  # first visits served
    warm: int = 0  # first visits served at once
    unserved: int = 0  # visits still without a WebUI at the end
    rewaits: list[float] = field(default_factory=list)  # returns whose pod was gone
    kept: int = 0  # returns that found their pod
    reclaims: int = 0
    mid_generation: int = 0  # reclaims while a generation ran
    created: int = 0
    warming_s: float = 0.0
    warm_s: float = 0.0
    in_use_s: float = 0.0
    claimed_idle_s: float = 0.0

    @property
    def idle_s(self) -> float:
        return self.warm_s + self.claimed_idle_s


@dataclass
class Pod:
    n: int
    created: float
    ready_at: float
    claimed_at: float | None = None
    ended: float | None = None
    person: str | None = None
    visits: list[tuple[Visit, float]] = field(default_factory=list)  # (visit, got it at)

    def state(self, now: float) -> str:
        if self.claimed_at is not None:
            return "claimed"
        return "ready" if now >= self.ready_at else "warming"


def _in_use(pod: Pod, end: float) -> float:
    """Seconds of [claimed_at, end] inside some visit's use (interaction, then its batch)."""
    spans = sorted((g, min(end, g + v.use)) for v, g in pod.visits)
    total, upto = 0.0, pod.claimed_at or 0.0
    for a, b in spans:
        a = max(a, upto)
        if b > a:
            total, upto = total + b - a, b
    return total


class Model:
    """One policy on one workload; `run()` once."""

    def __init__(
        self, policy: Policy, work: Workload, *, buffer: int, seed: int, tab_activity: bool
    ) -> None:
        self.policy, self.work, self.buffer, self.tab_activity = policy, work, buffer, tab_activity
        self.rng = random.Random(seed)
        self.res = Result()
        self.now = 0.0
        self.pods: list[Pod] = []
        self.held: dict[str, Pod] = {}  # person -> claimed pod
        self.line: list[tuple[Visit, float, bool]] = []  # sdbroker's waiting line
        self.replicas = 0  # published: the Fleet's spec.replicas
        self.unserved: set[tuple[str, bool]] = set()  # (person, a return) without a WebUI yet
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    # -- pods -----------------------------------------------------------------
    def live(self) -> list[Pod]:
        return [p for p in self.pods if p.ended is None]

    def start_pod(self) -> None:
        pod = Pod(len(self.pods), self.now, self.now + self.rng.uniform(*START))
        self.pods.append(pod)
        self.res.created += 1
        self.at(pod.ready_at, lambda: self.on_ready(pod))

    def end_pod(self, pod: Pod) -> None:
        pod.ended = self.now
        if pod.person is not None and self.held.get(pod.person) is pod:
            del self.held[pod.person]

    def give(self, pod: Pod, visit: Visit, since: float, back: bool) -> None:
        pod.claimed_at = pod.claimed_at if pod.claimed_at is not None else self.now
        pod.person = visit.person
        pod.visits.append((visit, self.now))
        self.held[visit.person] = pod
        self.unserved.discard((visit.person, back))
        wait = self.now - since
        if back:
            self.res.rewaits.append(wait)
        else:
            self.res.waits.append(wait)
            self.res.warm += wait == 0
        if visit.back is not None and visit.back_after is not None:
            nxt = visit.back
            self.at(
                self.now + visit.active + visit.tab + visit.back_after,
                lambda: self.arrive(nxt, True),
            )

    # -- what each policy can see of a session ----------------------------------
    def session(self, pod: Pod) -> tuple[float, float, float, float]:
        """(end of interaction, end of batch, tab closed, last HTTP request) of its latest visit."""
        v, g = pod.visits[-1]
        acted = g + v.active
        batch_end = acted + v.batch
        closed = acted + v.tab
        http = max(acted, min(batch_end, closed))  # Gradio 3 polls progress only while a job runs
        if self.tab_activity:
            http = max(http, closed)
        return acted, batch_end, closed, http

    def sees(self, pod: Pod) -> bool:
        """Does the broker see this person's tabs? (a fixed share, by a hash of the name)"""
        person = pod.person or ""
        return zlib.crc32(person.encode()) % 1000 < self.policy.seen * 1000

    def reap(self) -> None:
        for pod in [p for p in self.live() if p.claimed_at is not None]:
            acted, batch_end, closed, http = self.session(pod)
            busy = self.now < batch_end
            if self.policy.kind == "published":  # cloud-function/main.py: lastaccess only
                end = self.now - min(http, self.now) >= IDLE_TIMEOUT
            else:
                last = max(acted + (closed - acted) * self.tab_activity, batch_end)
                end = not busy and self.now - min(last, self.now) >= IDLE_TIMEOUT
                if self.policy.presence is not None and not busy and self.sees(pod):
                    end |= self.now >= max(closed, batch_end) + self.policy.presence
            if end:
                self.res.reclaims += 1
                self.res.mid_generation += busy and self.now >= acted
                self.end_pod(pod)
        self.after_change()
        self.at(self.now + self.policy.reap_every, self.reap)

    # -- scaling ----------------------------------------------------------------
    def after_change(self) -> None:
        if self.policy.kind == "published":
            self.reconcile()  # the GameServerSet replaces what was deleted, at once
        else:
            self.scale()

    def autoscale(self) -> None:
        """FleetAutoscaler Buffer sync: replicas = allocated + bufferSize, within [buffer, max]."""
        allocated = sum(p.claimed_at is not None for p in self.live())
        self.replicas = max(self.buffer, min(self.work.gpus, allocated + self.buffer))
        self.reconcile()
        self.at(self.now + self.policy.scale_every, self.autoscale)

    def reconcile(self) -> None:
        live = self.live()
        for _ in range(self.replicas - len(live)):
            self.start_pod()
        surplus = len(live) - self.replicas
        if surplus > 0:  # not-yet-Ready first (newest first), then Ready; never an Allocated one
            free = [p for p in live if p.claimed_at is None]
            free.sort(key=lambda p: (p.state(self.now) == "ready", -p.created))
            for pod in free[:surplus]:
                self.end_pod(pod)

    def scale(self) -> None:
        live = self.live()
        claimed = sum(p.claimed_at is not None for p in live)
        target = min(self.work.gpus, claimed + len(self.line) + self.buffer)
        if len(live) < target:
            for _ in range(target - len(live)):
                self.start_pod()
        elif len(live) > target:
            ready = sorted(
                (p for p in live if p.state(self.now) == "ready"), key=lambda p: p.ready_at
            )
            for pod in ready[: len(live) - target]:
                self.end_pod(pod)

    # -- people ---------------------------------------------------------------
    def ready_pod(self) -> Pod | None:
        ready = [p for p in self.live() if p.state(self.now) == "ready"]
        return min(ready, key=lambda p: p.ready_at) if ready else None

    def arrive(self, visit: Visit, back: bool, since: float | None = None) -> None:
        since = self.now if since is None else since
        if (pod := self.held.get(visit.person)) is not None:
            self.res.kept += back
            pod.visits.append((visit, self.now))
            if visit.back is not None and visit.back_after is not None:
                nxt = visit.back
                self.at(
                    self.now + visit.active + visit.tab + visit.back_after,
                    lambda: self.arrive(nxt, True),
                )
            return
        self.unserved.add((visit.person, back))
        if self.policy.kind == "published":
            if (pod := self.ready_pod()) is not None:
                self.give(pod, visit, since, back)
            else:  # "Too many users, Please try later!": a reload by hand
                self.at(self.now + self.policy.reload, lambda: self.arrive(visit, back, since))
            return
        if not self.line and (pod := self.ready_pod()) is not None:
            self.give(pod, visit, since, back)
        else:
            self.line.append((visit, since, back))
        self.scale()

    def on_ready(self, pod: Pod) -> None:
        if pod.ended is not None or self.policy.kind == "published":
            return
        if self.line:
            visit, since, back = self.line.pop(0)
            self.give(pod, visit, since, back)
        self.scale()

    # -- the run --------------------------------------------------------------
    def run(self) -> Result:
        if self.policy.kind == "oracle":
            return oracle(self.work, self.rng)
        for v in self.work.visits:
            self.at(v.arrive, lambda v=v: self.arrive(v, False))
        self.at(0.0, self.autoscale if self.policy.kind == "published" else self.scale)
        self.at(self.policy.reap_every, self.reap)
        while self._heap and self._heap[0][0] <= self.work.span:
            self.now, _, fn = heapq.heappop(self._heap)
            fn()
        self.now = self.work.span
        self.res.unserved = len(self.unserved)
        for pod in self.pods:
            end = self.work.span if pod.ended is None else pod.ended
            self.res.warming_s += max(0.0, min(end, pod.ready_at) - pod.created)
            if pod.claimed_at is None:
                self.res.warm_s += max(0.0, end - pod.ready_at)
                continue
            self.res.warm_s += max(0.0, pod.claimed_at - pod.ready_at)
            use = _in_use(pod, end)
            self.res.in_use_s += use
            self.res.claimed_idle_s += end - pod.claimed_at - use
        return self.res


def oracle(work: Workload, rng: random.Random) -> Result:
    """A pod per visit, started to answer at the arrival (or when a GPU frees), ended at the end
    of use: the bound no policy can beat on these arrivals (start times still cost warming)."""
    res = Result()
    free: list[float] = [0.0] * work.gpus  # when each GPU is next free
    heapq.heapify(free)
    seq = itertools.count()
    pending = [(v.arrive, next(seq), v, False) for v in work.visits]
    heapq.heapify(pending)
    while pending:
        arrive, _, v, back = heapq.heappop(pending)
        if arrive > work.span:
            continue
        start_delay = rng.uniform(*START)
        gpu_free = heapq.heappop(free)
        start = max(arrive - start_delay, gpu_free)
        ready = start + start_delay
        got = max(arrive, ready)
        if got > work.span:
            res.unserved += 1
            heapq.heappush(free, gpu_free)
            continue
        (res.rewaits if back else res.waits).append(got - arrive)
        res.warm += not back and got == arrive
        end = min(work.span, got + v.use)
        res.created += 1
        res.warming_s += ready - start
        res.in_use_s += end - got
        heapq.heappush(free, end)
        if v.back is not None and v.back_after is not None:
            heapq.heappush(
                pending, (got + v.active + v.tab + v.back_after, next(seq), v.back, True)
            )
    return res
