"""The admin's fleet sizing file (fleet.yaml): its vocabulary, shape and loader.

`types` holds the value types (each checks one thing and says what it wants),
`models` the file's shape, `load` reads and validates a file, `report` turns
failures into `FILE:LINE: field: message` lines, using the line numbers
`yamlfile` keeps. Import from here (`fleet.spec`, or `fleet` for the common names):
the modules are private to the package.
"""

from .load import load_spec, parse_spec
from .models import (
    AgonesProfile,
    FleetSpec,
    LocalProfile,
    PodSettings,
    Profile,
    ScheduleEntry,
)
from .report import SpecError, SpecIssue
from .types import split_rule

__all__ = [
    "AgonesProfile",
    "FleetSpec",
    "LocalProfile",
    "PodSettings",
    "Profile",
    "ScheduleEntry",
    "SpecError",
    "SpecIssue",
    "load_spec",
    "parse_spec",
    "split_rule",
]
