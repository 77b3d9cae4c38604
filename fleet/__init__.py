"""The fleet: YAML spec, Redis state and Lua, backends, controller, WebUI probes.

Knows nothing of HTTP pages or of who is logged in: callers hand it user ids.
"""

from . import keys, specstore, start_health
from .aiotasks import Tasks
from .autoscale import Autoscaler, Override, SizeError, Sizing
from .backends import Backend, Isolation, isolation_of, make_backend
from .controller import Controller, Doorbell
from .embedded_redis import EmbeddedRedis
from .errors import BackendError, Conflict, FleetError, PodGone, StoreUnavailable, Unavailable
from .events import Event, Kind, LogObserver, Observer
from .forecast import Eta, Outlook, estimate, read_outlook
from .history import History, Sample, samples_kept
from .listener import listen
from .model import (
    Claim,
    Ended,
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
from .redis_client import connect_redis
from .service import Fleet, stop_fleet
from .slug import slugify
from .spec import FleetSpec, Profile, SpecError, load_spec, parse_spec
from .specstore import SpecFollower
from .store import FleetStore

__all__ = [
    "NOTICE_TTL",
    "Tell",
    "Autoscaler",
    "Eta",
    "Event",
    "Kind",
    "LogObserver",
    "Observer",
    "History",
    "Outlook",
    "Override",
    "Sample",
    "SizeError",
    "Sizing",
    "SpecFollower",
    "estimate",
    "read_outlook",
    "samples_kept",
    "specstore",
    "start_health",
    "Backend",
    "BackendError",
    "Isolation",
    "isolation_of",
    "Claim",
    "Conflict",
    "Controller",
    "Doorbell",
    "EmbeddedRedis",
    "Ended",
    "Fleet",
    "FleetError",
    "FleetSpec",
    "FleetStore",
    "Phase",
    "PodGone",
    "PodInfo",
    "PodRecord",
    "PodState",
    "Probe",
    "Profile",
    "SpecError",
    "StoreUnavailable",
    "Tasks",
    "Unavailable",
    "Waiting",
    "Queued",
    "Rebuilding",
    "Retry",
    "SessionEnded",
    "place_of",
    "WebUIKind",
    "FALLBACK_KIND",
    "connect_redis",
    "keys",
    "listen",
    "load_spec",
    "make_backend",
    "make_probe",
    "register_kind",
    "unregister_kind",
    "parse_spec",
    "slugify",
    "stop_fleet",
]
