"""The fleet: YAML spec, Redis state and Lua, backends, controller, WebUI probes.

Knows nothing of HTTP pages or of who is logged in: callers hand it user ids.

The public face is what this module exports: names, and five modules used as
namespaces (`keys`: every Redis key; `redis_text`: decoding what Redis returns;
`specstore`: the running spec in Redis; `start_health`, `heartbeats`: their records).
Every other module is private: `broker` and `reaper` import `from fleet import ...`,
never `fleet.<module>` (import-linter's "fleet's public face" contract, pyproject).
"""

from . import heartbeats, keys, redis_text, specstore, start_health
from .activity_rules import ActivityClassifier, classifier_for
from .aiotasks import TaskHealth, Tasks
from .autoscale import Autoscaler, SizeError
from .backends import Backend, isolation_of, make_backend
from .controller import Controller, Doorbell
from .durations import Duration, parse_duration
from .embedded_redis import EmbeddedRedis, die_with_parent
from .errors import BackendError, Conflict, FleetError, PodGone, StoreUnavailable
from .events import Event, Handler, Kind, LogObserver
from .forecast import Eta, Outlook, estimate, read_outlook
from .history import History, samples_kept
from .leader import LeaderLock
from .listener import listen
from .model import (
    Blocked,
    Candidate,
    Claim,
    Limited,
    Phase,
    PodInfo,
    PodRecord,
    PodState,
    Queued,
    Rebuilding,
    Retry,
    SessionEnded,
    Waiting,
    place_of,
)
from .notices import NOTICE_TTL, Tell
from .probes import FALLBACK_KIND, Probe, WebUIKind, make_probe, register_kind, unregister_kind
from .redis_client import PasswordFileUnreadable, RedisConfigError, connect_redis, redis_problems
from .render import RenderError
from .render import render as render_fleet
from .schema import LAYOUT, LayoutError
from .schema import OLDEST as OLDEST_LAYOUT
from .schema import ensure as ensure_layout
from .schema import finalize as finalize_layout
from .service import Fleet, stop_fleet
from .slug import slugify
from .spec import FleetSpec, Profile, SpecError, load_spec, parse_spec
from .specstore import SpecFollower
from .store import FleetStore
from .usage import By as UsageBy
from .usage import Usage, read_usage
from .webui_settings import Store as SettingsStore

__all__ = [
    "ActivityClassifier",
    "Autoscaler",
    "Backend",
    "BackendError",
    "Candidate",
    "Claim",
    "classifier_for",
    "Conflict",
    "connect_redis",
    "die_with_parent",
    "Controller",
    "Doorbell",
    "Duration",
    "EmbeddedRedis",
    "ensure_layout",
    "estimate",
    "Eta",
    "Event",
    "FALLBACK_KIND",
    "finalize_layout",
    "Fleet",
    "FleetError",
    "FleetSpec",
    "FleetStore",
    "Handler",
    "heartbeats",
    "History",
    "isolation_of",
    "keys",
    "Kind",
    "LAYOUT",
    "LayoutError",
    "LeaderLock",
    "listen",
    "load_spec",
    "LogObserver",
    "make_backend",
    "make_probe",
    "NOTICE_TTL",
    "OLDEST_LAYOUT",
    "Outlook",
    "parse_duration",
    "parse_spec",
    "PasswordFileUnreadable",
    "Phase",
    "place_of",
    "PodGone",
    "PodInfo",
    "PodRecord",
    "PodState",
    "Probe",
    "Profile",
    "Queued",
    "read_outlook",
    "read_usage",
    "Rebuilding",
    "redis_problems",
    "redis_text",
    "RedisConfigError",
    "register_kind",
    "render_fleet",
    "RenderError",
    "Retry",
    "samples_kept",
    "SessionEnded",
    "SizeError",
    "SettingsStore",
    "slugify",
    "SpecError",
    "SpecFollower",
    "specstore",
    "start_health",
    "stop_fleet",
    "StoreUnavailable",
    "TaskHealth",
    "Tasks",
    "Tell",
    "unregister_kind",
    "Usage",
    "UsageBy",
    "Waiting",
    "Limited",
    "Blocked",
    "WebUIKind",
]
