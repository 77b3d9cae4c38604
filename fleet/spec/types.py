"""Value types of the fleet file: each checks one thing and says what it wants.

Kept apart from the models in `models.py` so the models read as the file's shape
and this module as its vocabulary. Messages are what the admin will read.
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    with_config,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from ..durations import Duration
from ..probes import kind_of
from .yamlfile import Loc

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "WS", "*")
PLACEHOLDERS = ("port", "pod", "home")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

_PROFILE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkKMGTPE]i?)?$")
_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")


def fail_at(problems: list[tuple[Loc, str]]) -> None:
    """Raise all `problems` at once, each at its loc relative to the value being validated.

    Pydantic merges a ValidationError raised inside a validator into the outer
    one, prefixing our locs, so a rule can point at a sibling's child field.
    """
    if problems:
        details = [
            InitErrorDetails(
                type=PydanticCustomError("rule", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ]
        raise ValidationError.from_exception_data("fleet", details)


def _profile_name(value: str) -> str:
    if not _PROFILE_NAME.match(value):
        raise ValueError(
            f"'{value}' must be 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"'{value}' is not a DNS-1123 label (1-63 lowercase letters, digits or '-')"
        )
    return value


def _abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"'{value}' must be a path starting with /")
    return value


def _text(value: Any) -> Any:
    """Numbers become strings: admins write `--steps, 20` or `WORKERS: 4` unquoted."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _quantity(value: Any) -> Any:
    value = _text(value)
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise ValueError(f"'{value}' is not a Kubernetes quantity like 500m, 2 or 8Gi")
    return value


def _buffer(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must be at least 0")
        return value
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be a whole number or a percentage like 20%, got {value!r}")
    if not 1 <= int(match[1]) <= 100:
        raise ValueError(f"percentage must be between 1% and 100%, got {value.strip()}")
    return f"{int(match[1])}%"


def _probe(value: str) -> str:
    kind_of(value)  # the registry in fleet.probes says which kinds exist and how each is written
    return value


def _activity_rule(value: str) -> str:
    parts = value.split()
    if len(parts) not in (1, 2):
        raise ValueError(f"'{value}' must be PATTERN or METHOD PATTERN, like 'POST /sdapi/*'")
    method, pattern = parts if len(parts) == 2 else ("*", parts[0])
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}' (use {', '.join(METHODS)})")
    if not pattern.startswith("/"):
        raise ValueError(f"path pattern '{pattern}' must start with /")
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"path pattern '{pattern}' has unbalanced [ ]")
    return " ".join(parts)


def _cron(value: str) -> str:
    try:
        CronTrigger.from_crontab(value, timezone=UTC)
    except ValueError as exc:
        reason = str(exc)
        raise ValueError(f"invalid cron '{value}': {reason[:1].lower()}{reason[1:]}") from None
    if any(c.isdigit() for c in value.split()[4]):
        # APScheduler 3 counts weekdays from Monday = 0, crontab from Sunday = 0: "1-5"
        # would silently mean Tuesday to Saturday. Names mean the same to both.
        raise ValueError(f"invalid cron '{value}': write the day of week as names, like mon-fri")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # not found, malformed key, a directory
        raise ValueError(
            f"unknown time zone '{value}' (use an IANA name like UTC or Europe/Berlin)"
        ) from None
    return value


ProfileName = Annotated[str, AfterValidator(_profile_name)]
"""Used in Redis keys and Kubernetes labels, hence short and plain."""
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Text = Annotated[str, BeforeValidator(_text)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
Buffer = Annotated[int | str, BeforeValidator(_buffer)]
"""A count of warm pods, or "N%" of the claimed ones (normalised to "20%")."""
ProbeKind = Annotated[str, AfterValidator(_probe)]
"""A registered kind (fleet.probes: a1111, comfyui, http:/path): how the fleet asks a WebUI
whether it is ready and busy."""
ActivityRule = Annotated[str, AfterValidator(_activity_rule)]
Cron = Annotated[str, AfterValidator(_cron)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
Count = Annotated[int, Field(ge=0)]
PositiveCount = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


@with_config(ConfigDict(extra="forbid"))
class Resources(TypedDict, total=False):
    """A container's Kubernetes ResourceRequirements: quantities by resource name.

    A TypedDict, not a model: backends pass it straight into the pod spec.
    """

    requests: dict[str, Quantity]
    limits: dict[str, Quantity]


def split_rule(rule: str) -> tuple[str, str]:
    """Split a validated activity rule into (METHOD, PATTERN); a bare PATTERN means any method."""
    parts = rule.split()
    return (parts[0], parts[1]) if len(parts) == 2 else ("*", parts[0])
