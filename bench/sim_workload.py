"""Who comes, when, and what they do with the WebUI: the workloads of bench/sim.py.

One plan is replayed through every policy (and the oracle), so differences come
from the policy alone. Times are simulated seconds from the start of the run.

A visit is what a person does once they have their WebUI:

- `active`: seconds of interaction (clicks, short generations): every policy
  sees requests all along;
- `batch`: seconds of a generation started at the end of `active` as they walk
  away (0: none). Only a busy probe sees it once the tab is closed: the
  published nginx sees the page's `/internal/progress` polls, which the pinned
  A1111 (Gradio 3) sends only while a job runs and only from an open tab;
- `tab`: seconds the tab stays open after `active`, idle (0: closed at once).
  An idle Gradio 3 page sends nothing, so by default this is not activity for
  any policy; the sensitivity run counts it for all of them;
- `back_after`: the person comes back this many seconds after their tab closed
  (None: they don't): their pod kept, or a re-claim they wait for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Visit:
    person: str
    arrive: float
    active: float
    batch: float = 0.0
    tab: float = 0.0
    back_after: float | None = None
    back: Visit | None = None  # the next visit of the same person, if any

    @property
    def use(self) -> float:
        """Seconds from getting the WebUI to the end of its use (interaction or batch)."""
        return self.active + self.batch


@dataclass(frozen=True)
class Workload:
    name: str
    what: str
    visits: list[Visit]  # first visits, by arrival; returns hang off `back`
    gpus: int
    span: float


def _visit(
    rng: random.Random, person: str, arrive: float, span: float, all_day_tab: bool, depth: int = 0
) -> Visit:
    """Same draws in the same order whatever the workload, so the day and its all-day-tab twin
    differ only in the tabs."""
    active = min(2 * 3600, rng.lognormvariate(6.9, 0.7))  # ~17 min median
    batch = rng.lognormvariate(6.0, 0.9) if rng.random() < 0.15 else 0.0  # ~7 min median
    tab = rng.lognormvariate(7.8, 0.8) if rng.random() < 0.5 else 0.0  # ~40 min median
    returns = depth == 0 and rng.random() < 0.3
    gap = rng.lognormvariate(7.3, 0.9) if returns else None  # ~25 min median, often longer
    back = _visit(rng, person, 0.0, span, all_day_tab, depth + 1) if returns else None
    if all_day_tab:  # the tab stays open until they come back to it, or to the end
        return Visit(
            person, arrive, active, batch, gap if returns else span, 0.0 if returns else None, back
        )
    return Visit(person, arrive, active, batch, tab, gap, back)


def morning(users: int, span: float, seed: int, *, all_day_tab: bool = False) -> list[Visit]:
    """Arrivals peaking 0.3 of the way in (a 9:30 peak for a run starting at 8:00)."""
    rng = random.Random(seed)
    out = []
    for i in range(users):
        t = (
            rng.gauss(0.3 * span, 0.18 * span)
            if rng.random() < 0.8
            else rng.uniform(0, 0.75 * span)
        )
        out.append(_visit(rng, f"user{i:03d}", max(0.0, min(0.8 * span, t)), span, all_day_tab))
    return sorted(out, key=lambda v: v.arrive)


def spike(users: int, within: float, seed: int, span: float) -> list[Visit]:
    """A workshop: `users` log in within `within` seconds, 10 minutes into the run."""
    rng = random.Random(seed)
    out = [
        _visit(rng, f"user{i:03d}", 600 + rng.uniform(0, within), span, False) for i in range(users)
    ]
    return sorted(out, key=lambda v: v.arrive)


def workloads(users: int, gpus: int, span: float, seed: int) -> list[Workload]:
    """The main day, the login spike and the all-day-tab day (the sensitivity run reuses the day)."""
    return [
        Workload(
            "day",
            f"{users} people over a {span / 3600:g} h morning, {gpus} GPUs",
            morning(users, span, seed),
            gpus,
            span,
        ),  # fmt: skip
        Workload(
            "spike",
            "200 logins within 5 minutes on 200 GPUs from a buffer of 5",
            spike(200, 300, seed, 4 * 3600),
            200,
            4 * 3600,
        ),  # fmt: skip
        Workload(
            "all-day-tab",
            f"the day, every tab left open to the end, {gpus} GPUs",
            morning(users, span, seed, all_day_tab=True),
            gpus,
            span,
        ),  # fmt: skip
    ]
