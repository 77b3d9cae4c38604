"""A small line chart of warming/ready/claimed/queue over time, as SVG drawn on the server.

No JavaScript and no chart library: the console works with scripts off and
the numbers are the same ones the API returns. Polyline points are plain
numbers, so the template's autoescaping has nothing to trust. The series come
in the order of the fleet table's columns, with the colours of its swatches,
and each line ends at the table's figures (`current`), so legend and table agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import SampleView

WIDTH, HEIGHT, PAD = 600, 120, 4
#: (name, colour) in the fleet table's column order; the table's swatches use these colours.
SERIES = (
    ("warming", "#9a6700"),
    ("ready", "#1a7f37"),
    ("claimed", "#3358d4"),
    ("queue", "#b3261e"),
)
COLORS = dict(SERIES)


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    color: str
    points: str
    last: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    top: int  # the value at the top edge
    since: float  # the left edge: the oldest sample shown
    lines: tuple[Line, ...]
    empty: bool


def chart(
    samples: list[SampleView], *, now: float, hours: float, current: SampleView | None = None
) -> Chart:
    """Lines from the oldest sample of the last `hours` to `now`; the y axis starts at 0.

    The x axis spans the samples there are, so a broker started ten minutes
    ago shows ten minutes across the whole width rather than a sliver.
    `current`: the figures the table shows now, drawn as the last point (a sample
    is taken every minute or so; without it the legend said 0 beside a table's 1).
    """
    shown = [s for s in samples if s.at >= now - hours * 3600]
    if current is not None:
        shown.append(current)
    start = min(shown[0].at, now - 60) if shown else now - hours * 3600
    top = max([1, *(getattr(s, name) for s in shown for name, _ in SERIES)])

    def x(at: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (at - start) / max(1.0, now - start)

    def y(value: int) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top

    lines = tuple(
        Line(
            name=name,
            color=color,
            points=" ".join(f"{x(s.at):.1f},{y(getattr(s, name)):.1f}" for s in shown),
            last=getattr(shown[-1], name) if shown else 0,
        )
        for name, color in SERIES
    )
    return Chart(WIDTH, HEIGHT, top, start, lines, empty=len(shown) < 2)
