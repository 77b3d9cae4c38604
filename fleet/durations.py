"""Human durations ("30s", "15m", "8h", "1h30m", "2d") for the admin's files.

Admins write timeouts the way they say them; the code works in seconds
(float). Plain numbers mean seconds so a value can also come from code.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"\d+(?:\.\d+)?"
# Units in falling order, each at most once: "1h30m" yes, "30m1h" or "1h1h" no.
_DURATION = re.compile("".join(rf"(?:(?P<{u}>{_NUMBER}){u})?" for u in _UNITS))
_PLAIN = re.compile(_NUMBER)

FORMS = "a number of seconds or a duration like 30s, 15m, 8h, 1h30m, 2d"


def parse_duration(value: str | int | float) -> float:
    """Return the duration in seconds; raise ValueError naming the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {FORMS}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a duration of 0 or more, got {value}")
        return float(value)
    text = value.strip().lower().replace(" ", "")
    if _PLAIN.fullmatch(text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"'{value}' is not a duration; use {FORMS}")
    return float(sum(float(n) * _UNITS[u] for u, n in match.groupdict().items() if n))


def _validate(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_validate)]
"""A duration field: accepts "15m", "1h30m", 900, ...; holds seconds as float."""
