"""Log lines: plain text for a terminal, JSON lines for a log sink (SDB_LOG_FORMAT).

Every line written while a request is served carries that request's id and,
once known, its user, groups, pod and profile: they live in a context variable
set by the request-id middleware and by the gateway, and a filter copies them
onto each record, so no call site has to pass them. Fields a call site gives
with `extra=` (a session start or end: fleet/service.py, fleet/store/) land
in the JSON object too, which is what lets a sink such as BigQuery count GPU
hours without reading Redis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from fleet import FleetSpec, Profile

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID = "sdb.request_id"  # where the middleware keeps the id on the request
# What logging.LogRecord carries of itself: everything else on a record came with extra=.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_context: ContextVar[dict[str, object] | None] = ContextVar("sdbroker_log_context", default=None)


def start_request(request_id: str) -> None:
    """A new request on this task: what an earlier request on the same keep-alive
    connection bound (its user, its pod) is forgotten."""
    _context.set({"request_id": request_id})


def bind(**fields: object) -> None:
    """Add fields to every line logged from here on in this request."""
    _context.set({**current(), **{k: v for k, v in fields.items() if v not in (None, "")}})


def current() -> dict[str, object]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the request's fields onto each record (a field given with extra= wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class SessionFilter(logging.Filter):
    """Adds the GPU kind and GPU-seconds to the fleet's session_start/session_end lines:
    the fleet store that logs them knows the pod, not the fleet file's profiles."""

    def __init__(self, spec: Callable[[], FleetSpec]) -> None:
        super().__init__()
        self.spec = spec

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event not in ("session_start", "session_end"):
            return True
        try:
            profile = self.spec().profile(str(getattr(record, "profile", "")))
        except (KeyError, ValueError, LookupError):
            return True  # a profile the file no longer has: the line goes out as it is
        gpus = gpus_per_pod(profile)
        record.gpu = profile.gpu or ""
        record.gpus = gpus
        if event == "session_end":
            record.gpu_seconds = round(float(getattr(record, "seconds", 0.0)) * gpus, 1)
        return True


def gpus_per_pod(profile: Profile) -> int:
    """GPUs one pod of the profile holds: the pod template's count, one slot locally."""
    for template in (profile.kubernetes, profile.agones):
        if template is not None:
            return template.gpus
    return 1 if profile.local is not None and profile.local.gpus else 0


def describe_sessions(spec: Callable[[], FleetSpec]) -> Callable[[], None]:
    """Install a SessionFilter on every root handler; returns its removal."""
    session = SessionFilter(spec)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(session)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(session)

    return remove


def configure_logging(level: str | int, fmt: str = "text") -> None:
    """One format for every command. APScheduler logs each run of each job at INFO
    (most of a demo's log): its loggers show only warnings and errors."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class AccessLogger(AbstractAccessLogger):
    """One line per request, its fields separate (JSON mode) and its request id with it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "seconds": round(time, 4),
                "user_agent": request.headers.get("User-Agent", ""),
                "request_id": request.get(REQUEST_ID, ""),
            },
        )
