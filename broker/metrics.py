"""Prometheus metrics at /_broker/metrics, for admins and for SDB_METRICS_CIDRS.

Two kinds, on purpose:
- what *this* broker did (claims it made, requests it proxied, sockets it
  holds) are counters and histograms in the default registry, next to the
  reaper's `sdbroker_reclaims_total`; sum them over replicas;
- what the *fleet* is (pods by state, people waiting, sizes in force) is read
  from Redis at scrape time, so every replica reports the same numbers and a
  dashboard can take `max by (profile)` without double counting.

The proxy path pays one dict lookup, a counter increment and a histogram
observation per request: label children are cached, nothing touches Redis.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fleet import Event, StoreUnavailable, heartbeats, keys, start_health
from reaper import Reason, reclaims_at_zero

from .admin.guard import require_admin
from .appkeys import AUTOSCALER, FLEET, SETTINGS, STORE
from .identity import Identity
from .process_metrics import ReplicaProcesses
from .version import VERSION

CLAIMS = Counter(
    "sdbroker_claims",
    "New claims made by this broker: source=warm took a Ready pod at once, queued waited in line.",
    ["profile", "source"],
)
CLAIM_DURATION = Histogram(
    "sdbroker_claim_duration_seconds",
    "Time to make a new claim: the Lua call, writing the claim on the pod, and pointing "
    "its WebUI at the user's outputs.",
    ["profile"],
    # Fine below 100 ms, where a claim from a warm pod lands (the target is p99 <= 50 ms).
    buckets=(0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
             0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
WAIT = Histogram(
    "sdbroker_wait_seconds",
    "Time people spent in the waiting queue before they got a pod.",
    ["profile"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
POD_START = Histogram(
    "sdbroker_pod_start_seconds",
    "Time from creating a pod to how its start ended (observed by the leading controller): "
    "status=ready (its WebUI answered), failed (it exited while starting), timed_out (never "
    "passed its probe within start_timeout).",
    ["profile", "status"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200),
)
POD_START_FAILURES = Counter(
    "sdbroker_pod_start_failures",
    "Pod starts that failed (observed by the leading controller): reason=crashed (the WebUI "
    "exited while starting), start_timeout (never passed its probe), create_failed.",
    ["profile", "reason"],
)
PROXY_REQUESTS = Counter(
    "sdbroker_proxy_requests",
    "Requests to the WebUI side (every path outside /_broker/).",
    ["code"],
)
PROXY_DURATION = Histogram(
    "sdbroker_proxy_request_duration_seconds",
    "Time to serve a proxied HTTP request, streaming included (WebSockets excluded).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WEBSOCKETS = Gauge(
    "sdbroker_websockets_open",
    "WebSockets this broker is bridging now.",
    multiprocess_mode="livesum",  # SDB_WORKERS > 1: the workers alive, summed
)
REDIS_ERRORS = Counter(
    "sdbroker_redis_errors", "Requests that failed because Redis was unreachable."
)
EVENTS_HEARD = Counter(
    "sdbroker_events_heard",
    "Fleet events this broker heard on Redis pub/sub, by kind (reconnect: it subscribed "
    "again, and may have missed some).",
    ["kind"],
)
SETTINGS_KEPT = Counter(
    "sdbroker_settings",
    "Restores (at the claim) and saves (every look while claimed, and the last at a stop) "
    "of people's WebUI settings this broker made (local backend; elsewhere the pod's agent "
    "does them): outcome=failed was logged, and the session went on.",
    ["profile", "step", "outcome"],
)
EVENTS_HEARD.labels("reconnect")  # at 0 from the start: the SdbrokerLosingRedis alert's rate()

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: sdbroker_pod_start_seconds{status} of a failed start, by start_health reason.
START_STATUS = {start_health.CRASHED: "failed", start_health.START_TIMEOUT: "timed_out"}

_by_code: dict[int, Counter] = {}
_known: set[str] = set()  # profiles whose series _at_zero made


def count_request(code: int, seconds: float | None) -> None:
    child = _by_code.get(code)
    if child is None:
        child = _by_code[code] = PROXY_REQUESTS.labels(str(code))
    child.inc()
    if seconds is not None:
        PROXY_DURATION.observe(seconds)


def count_claim(profile: str, waited: float | None) -> None:
    """FleetStore.on_claim: a new claim, from a warm pod or after waiting in line."""
    CLAIMS.labels(profile, "warm" if waited is None else "queued").inc()
    if waited is not None:
        WAIT.labels(profile).observe(max(0.0, waited))


def claim_took(profile: str, seconds: float) -> None:
    """Fleet.on_claimed."""
    CLAIM_DURATION.labels(profile).observe(seconds)


def pod_started(profile: str, seconds: float) -> None:
    """Controller.on_ready."""
    POD_START.labels(profile, "ready").observe(seconds)


def pod_start_failed(profile: str, reason: str, seconds: float | None) -> None:
    """Controller.on_start_failure; `seconds` None: no pod was made (create_failed), so
    there is no start time to observe."""
    POD_START_FAILURES.labels(profile, reason).inc()
    status = START_STATUS.get(reason)
    if status is not None and seconds is not None:
        POD_START.labels(profile, status).observe(max(0.0, seconds))


def settings_counted(profile: str, step: str, outcome: str) -> None:
    """LocalSettings.on_outcome (fleet/backends/local_settings.py)."""
    SETTINGS_KEPT.labels(profile, step, outcome).inc()


def redis_error() -> None:
    REDIS_ERRORS.inc()


class EventMetrics:
    """Counts every fleet event heard (an `Observer`, fleet/events.py)."""

    def on_event(self, event: Event) -> None:
        EVENTS_HEARD.labels(event.kind.value).inc()


def instrument(handler: Handler) -> Handler:
    """Wrap the catch-all handler: status code and duration of every WebUI-side request."""

    async def measured(request: web.Request) -> web.StreamResponse:
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        started = time.perf_counter()
        code = 500
        if websocket:
            WEBSOCKETS.inc()
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = 499  # the client went away first (nginx's convention)
            raise
        except StoreUnavailable:
            REDIS_ERRORS.inc()
            raise
        finally:
            if websocket:
                WEBSOCKETS.dec()
            count_request(code, None if websocket else time.perf_counter() - started)

    return measured


class _Families:
    """A one-scrape collector for the gauges read from Redis."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def fleet_families(app: web.Application) -> list[Metric]:
    """Pods by state, queue length, sizes in force and failing starts per profile, heartbeats
    and sessions ended, from Redis (replicas agree)."""
    store = app[STORE]
    sizings = await app[AUTOSCALER].sizings(app[FLEET].spec)
    names = [s.base.name for s in sizings]
    starts = await start_health.read(store.redis, names)
    beats = await heartbeats.read(store.redis)
    ends = await heartbeats.session_ends(store.redis)
    _at_zero(names)
    async with store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            for key in (*keys.pod_states(name), keys.queue(name)):
                pipe.zcard(key)
        pipe.smembers(keys.DELETING)
        *counts, deleting = await pipe.execute()
    async with store.redis.pipeline(transaction=False) as pipe:
        for pod_id in deleting:
            pipe.hget(keys.pod(pod_id), "profile")
        deleting_profiles = await pipe.execute() if deleting else []
    pods = GaugeMetricFamily(
        "sdbroker_pods", "Pods by profile and state.", labels=["profile", "state"]
    )
    queue = GaugeMetricFamily(
        "sdbroker_queue_length", "People waiting, by profile.", labels=["profile"]
    )
    size = GaugeMetricFamily(
        "sdbroker_profile_size",
        "Sizes in force (schedule and admin overrides applied); buffer as a pod count now.",
        labels=["profile", "bound"],
    )
    in_row = GaugeMetricFamily(
        "sdbroker_pod_start_failures_in_row",
        "Failed pod starts since a pod of the profile last became Ready.",
        labels=["profile"],
    )
    for i, sizing in enumerate(sizings):
        name = sizing.base.name
        warming, ready, claimed, waiting = counts[i * 4 : i * 4 + 4]
        for state, value in (("warming", warming), ("ready", ready), ("claimed", claimed)):
            pods.add_metric([name, state], value)
        pods.add_metric([name, "deleting"], sum(1 for p in deleting_profiles if p == name))
        queue.add_metric([name], waiting)
        effective = sizing.effective
        size.add_metric([name, "min"], effective.min)
        size.add_metric([name, "max"], effective.max)
        size.add_metric([name, "buffer"], effective.buffer_for(claimed + waiting))
        in_row.add_metric([name], starts[name].failures_in_row)
    return [pods, queue, size, in_row, *_liveness(beats, ends, names)]


def _at_zero(profiles: list[str]) -> None:
    """Every profile's series of this broker exist from the first scrape, at 0 (a label
    child is made once; later scrapes find it): rate() and the dashboard see them before
    the first claim or failed start."""
    for name in profiles:
        if name in _known:
            continue
        _known.add(name)
        for source in ("warm", "queued"):
            CLAIMS.labels(name, source)
        WAIT.labels(name)
        CLAIM_DURATION.labels(name)
        for status in ("ready", *START_STATUS.values()):
            POD_START.labels(name, status)
        for reason in start_health.REASONS:
            POD_START_FAILURES.labels(name, reason)
        reclaims_at_zero([name])
        for step in ("restore", "save"):
            for outcome in ("ok", "failed"):
                SETTINGS_KEPT.labels(name, step, outcome)


def _liveness(
    beats: dict[str, float], ends: dict[tuple[str, str], int], names: list[str]
) -> list[Metric]:
    beat = GaugeMetricFamily(
        "sdbroker_heartbeat_timestamp_seconds",
        "Unix time each part of the fleet last ran: controller_leader (the lock held), "
        "controller_pass (a full pass done), reaper (a reap cycle, in a broker or a CronJob).",
        labels=["component"],
    )
    for component, at in sorted(beats.items()):
        beat.add_metric([component], at)
    ended = CounterMetricFamily(
        "sdbroker_sessions_ended",
        "Sessions ended, by profile and reason, counted in Redis once for the whole fleet "
        "(a CronJob reaper's included); the same on every replica.",
        labels=["profile", "reason"],
    )
    for name in names:  # every profile and reaper reason at 0, so rate() works from the start
        for reason in Reason:
            ends.setdefault((name, str(reason)), 0)
    for (profile, why), count in sorted(ends.items()):
        ended.add_metric([profile, why], count)
    return [beat, ended]


def build_info() -> Metric:
    info = GaugeMetricFamily(
        "sdbroker_build_info", "The running sdbroker's version (always 1).", labels=["version"]
    )
    info.add_metric([VERSION], 1)
    return info


def this_broker() -> CollectorRegistry:
    """This process's registry; under SDB_WORKERS > 1 every worker's, summed
    (prometheus_client's multiprocess mode: the supervisor gives each worker
    PROMETHEUS_MULTIPROC_DIR), so a scrape that lands on any worker sees them all."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ReplicaProcesses(directory))
    return registry


async def metrics_page(request: web.Request) -> web.StreamResponse:
    """The Prometheus text format; fleet gauges are read from Redis for this very scrape."""
    if not request.app[SETTINGS].may_scrape_metrics(request.remote):
        identity = await require_admin(request)
        if not isinstance(identity, Identity):
            return identity
    try:
        families = await fleet_families(request.app)
    except StoreUnavailable:
        REDIS_ERRORS.inc()
        families = []
    families.append(build_info())
    body = generate_latest(this_broker()) + generate_latest(_Families(families))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


__all__ = [
    "claim_took",
    "count_claim",
    "instrument",
    "metrics_page",
    "pod_started",
    "redis_error",
    "settings_counted",
]
