"""The status page's small chart of an import job: rows read, rejected and suppressed per run.

Inline SVG with no script and no external asset. Every number is in the markup as text
(a <title> on each point, the legend beside the chart), so the chart tells the same with
or without JavaScript and to a screen reader; each series has its own line style and point
shape as well as its colour, so none of it rests on colour alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

WIDTH, HEIGHT = 360, 136
LEFT, RIGHT = 40, 8  # room for the value labels
# Two panels, each with its own scale: rows read run to thousands, rejected and suppressed
# rows to a few, which on one scale would lie flat on the axis where a spike matters.
PANELS = ((("read",), 8, 56), (("rejected", "suppressed"), 70, 118))  # series, top, bottom


@dataclass(frozen=True)
class Series:
    key: str  # the CSS class suffix and the counts' name
    label: str
    dash: str  # stroke-dasharray: the line style tells the series apart without colour
    shape: str  # circle | square | triangle


SERIES = (
    Series("read", "read", "", "circle"),
    Series("rejected", "rejected", "5 3", "square"),
    Series("suppressed", "suppressed", "1.5 2.5", "triangle"),
)


@dataclass(frozen=True)
class Point:
    run_id: int
    started: str
    values: dict[str, int]


def chart_points(runs: list[dict[str, Any]]) -> list[Point]:
    """The runs (newest first, as history() gives them) that read a file, oldest first.

    A run that read no file (skipped, or failed before reading) has nothing to plot; a run
    stopped by a limit keeps the counts it would have applied, which is when a spike of
    rejected rows matters most."""
    points = []
    for run in reversed(runs):
        counts = run.get("counts") or {}
        if "read" not in counts:
            continue
        suppressed = sum(v for k, v in counts.items() if k.startswith("suppressed_"))
        values = {"read": counts["read"], "rejected": counts.get("rejected", 0)}
        values["suppressed"] = suppressed
        points.append(Point(run["run_id"], run.get("started") or "", values))
    return points


def counts_chart(points: list[Point], label: str) -> str:
    """The chart of `points` as an <svg> element, or a line saying there is nothing yet."""
    if not points:
        return '<p class="no-chart">No run has read a file yet: nothing to chart.</p>'
    first, last = points[0].run_id, points[-1].run_id
    span = f"run {first}" if first == last else f"runs {first}–{last}"
    title = f"{label}: rows read, rejected and suppressed, {span}"
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for keys, top_y, bottom_y in PANELS:
        top = max(1, *(point.values[key] for point in points for key in keys))
        parts.append(_axes(top, top_y, bottom_y, " and ".join(keys)))
        for series in SERIES:
            if series.key in keys:
                parts.append(_series(series, points, top, top_y, bottom_y))
    parts.append(
        f'<g class="axes"><text x="{LEFT}" y="{HEIGHT - 4}">run {first}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end">run {last}</text></g>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _x(index: int, count: int) -> float:
    inner = WIDTH - LEFT - RIGHT
    if count == 1:
        return LEFT + inner / 2
    return LEFT + inner * index / (count - 1)


def _y(value: int, top: int, top_y: int, bottom_y: int) -> float:
    return top_y + (bottom_y - top_y) * (1 - value / top)


def _axes(top: int, top_y: int, bottom_y: int, name: str) -> str:
    return (
        f'<g class="axes"><line x1="{LEFT}" y1="{top_y}" x2="{WIDTH - RIGHT}" y2="{top_y}" '
        f'class="grid"/><line x1="{LEFT}" y1="{bottom_y}" x2="{WIDTH - RIGHT}" '
        f'y2="{bottom_y}"/><text x="{LEFT - 4}" y="{top_y + 4}" text-anchor="end">{top:,}</text>'
        f'<text x="{LEFT - 4}" y="{bottom_y + 3}" text-anchor="end">0</text>'
        f'<text x="{WIDTH - RIGHT}" y="{top_y - 1}" text-anchor="end" class="panel">{name}'
        "</text></g>"
    )


def _series(series: Series, points: list[Point], top: int, top_y: int, bottom_y: int) -> str:
    spots = [
        (_x(i, len(points)), _y(point.values[series.key], top, top_y, bottom_y), point)
        for i, point in enumerate(points)
    ]
    dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in spots)
    marks = "".join(_mark(series, x, y, point) for x, y, point in spots)
    return (
        f'<g class="series series-{series.key}">'
        f'<polyline points="{line}" fill="none"{dash}/>{marks}</g>'
    )


def _mark(series: Series, x: float, y: float, point: Point) -> str:
    values = ", ".join(f"{s.label} {point.values[s.key]:,}" for s in SERIES)
    tip = f"<title>run {point.run_id}: {values}</title>"
    cls = f'class="pt pt-{series.key}"'
    if series.shape == "square":
        return f'<rect {cls} x="{x - 2.5:.1f}" y="{y - 2.5:.1f}" width="5" height="5">{tip}</rect>'
    if series.shape == "triangle":
        corners = f"{x:.1f},{y - 3.5:.1f} {x + 3.2:.1f},{y + 2.3:.1f} {x - 3.2:.1f},{y + 2.3:.1f}"
        return f'<polygon {cls} points="{corners}">{tip}</polygon>'
    return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="2.6">{tip}</circle>'


def legend(points: list[Point]) -> str:
    """The series' names with the newest run's values, as text beside the chart."""
    if not points:
        return ""
    newest = points[-1]
    items = "".join(
        f'<li class="key key-{s.key}"><svg width="22" height="8" aria-hidden="true">'
        f'<line x1="0" y1="4" x2="22" y2="4"'
        + (f' stroke-dasharray="{s.dash}"' if s.dash else "")
        + f"/></svg> {s.label} <b>{newest.values[s.key]:,}</b></li>"
        for s in SERIES
    )
    return (
        f'<ul class="legend" aria-label="newest run {newest.run_id}">{items}'
        f'<li class="key-run">newest: run {newest.run_id} · {len(points)} '
        f"run{'s' if len(points) != 1 else ''} charted</li></ul>"
    )
