"""Idle reclaim: policy, one reclaim cycle, leader lock. Knows nothing of the broker.

`ReapCycle` is one cycle (the broker schedules it with `ReaperJob`, a CronJob
runs it with `python -m reaper --once`); `policy` holds the rules of what is
idle, expired or dead; `RECLAIMS` counts what ended, by profile and reason.
"""

from .cycle import ReapCycle, Summary, end_session
from .metrics import RECLAIMS, count_reclaim, reclaims_at_zero
from .once import main, run_once
from .policy import Policy, Reason
from .schedule import ReaperJob
from .settings import ReaperSettings

__all__ = [
    "RECLAIMS",
    "Policy",
    "ReapCycle",
    "ReaperJob",
    "ReaperSettings",
    "Reason",
    "Summary",
    "count_reclaim",
    "end_session",
    "main",
    "reclaims_at_zero",
    "run_once",
]
