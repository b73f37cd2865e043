"""The console's pictures, drawn on the server as inline SVG (no JavaScript, no CDN): a stage's
timeline (which version served it when) and each numeric metric across the versions listed.

Every text that comes from metadata is escaped, every number is checked before it is placed: a
hostile value costs its own mark (left out, or drawn at the edge as off the scale), never the chart.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from ..versioning import sort_key

#: The most versions the timeline gives a lane of their own (the most recent holders).
MAX_LANES = 30
#: A metric value beyond this magnitude is drawn at the edge of its chart, not scaled with the rest.
MAX_SCALED = 1e15
_WIDTH, _LABELS, _LANE, _AXIS = 900, 120, 22, 34
_CHART_W, _CHART_H, _PAD = 360, 150, 36


def _el(tag: str, inner: str = "", **attrs: object) -> str:
    """One SVG element: attribute values escaped (``class_`` is ``class``, ``_`` in a name is ``-``),
    ``inner`` as given (already escaped markup)."""
    names = ((k.rstrip("_").replace("_", "-"), v) for k, v in attrs.items())
    shown = "".join(f' {k}="{escape(f"{v:.1f}" if isinstance(v, float) else v)}"' for k, v in names)
    return f"<{tag}{shown}>{inner}</{tag}>"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def span(start: datetime, end: datetime) -> str:
    """A duration as people say it: ``9 days``, ``3 h``, ``12 min``, ``40 s``."""
    seconds = max(0.0, (end - start).total_seconds())
    for size, unit in ((86_400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


@dataclass(frozen=True)
class Bar:
    """One period of the timeline as drawn: its lane, its x and width, and what it says."""

    version: str
    lane: int
    x: float
    width: float
    current: bool
    title: str


def timeline_svg(periods: Sequence[Mapping[str, Any]], now: datetime, link: Callable[[str], str]) -> Markup:
    """A stage's timeline: one lane per version (highest on top), a bar per period it served,
    from the first period to ``now``; ``link(version)`` is the URL of its page."""
    if not periods:
        return Markup("")
    versions = list(dict.fromkeys(str(p["version"]) for p in reversed(periods)))[:MAX_LANES]
    versions.sort(key=lambda v: sort_key(v) or (), reverse=True)
    lanes = {v: i for i, v in enumerate(versions)}
    start = min(p["from"] for p in periods)
    end = max(now, *(p["until"] or now for p in periods))
    total = max((end - start).total_seconds(), 1e-6)
    ticks = "%H:%M:%S" if total < 600 else "%m-%d %H:%M" if total < 3 * 86_400 else "%Y-%m-%d"
    plot = _WIDTH - _LABELS - 10

    def x(when: datetime) -> float:
        return _LABELS + (when - start).total_seconds() / total * plot

    bars = []
    for p in periods:
        version = str(p["version"])
        if version not in lanes:
            continue
        until = p["until"] or end
        by = f", by {p['actor']}" if p.get("actor") else ""
        ends = _when(until) if p["until"] else "now"
        title = f"{version}: {_when(p['from'])} → {ends} ({span(p['from'], until)}{by})"
        left = x(p["from"])
        bars.append(Bar(version, lanes[version], left, max(2.0, x(until) - left), p["until"] is None, title))
    height = len(versions) * _LANE + _AXIS
    parts = [
        f'<svg class="chart timeline" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{len(bars)} periods from {escape(_when(start))} to now</title>",
    ]
    for version, lane in lanes.items():
        y = lane * _LANE
        parts.append(_el("text", escape(version), class_="lane", x=_LABELS - 8, y=y + 15, text_anchor="end"))
        parts.append(_el("line", class_="grid", x1=_LABELS, x2=_WIDTH - 10, y1=y + _LANE, y2=y + _LANE))
    for bar in bars:
        css = "period current" if bar.current else "period"
        title = _el("title", escape(bar.title))
        y = bar.lane * _LANE + 3
        rect = _el("rect", title, class_=css, x=bar.x, y=y, width=bar.width, height=_LANE - 6, rx=3)
        parts.append(_el("a", rect, href=link(bar.version)))
    base = len(versions) * _LANE
    for i in range(5):
        tick = start + (end - start) * (i / 4)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        at = x(tick)
        parts.append(_el("line", class_="axis", x1=at, x2=at, y1=base, y2=base + 5))
        label = escape(tick.strftime(ticks))
        parts.append(_el("text", label, class_="tick", x=at, y=base + 20, text_anchor=anchor))
    parts.append("</svg>")
    return Markup("".join(parts))


def numeric(value: object) -> float | None:
    """A metric value that can be charted: a finite int or float (not a boolean), else None."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _scale(values: Sequence[float]) -> tuple[float, float]:
    """The range the chart's axis covers: every value, unless a few lie far out (beyond three
    interquartile ranges, or beyond :data:`MAX_SCALED`): those are drawn at the edge instead."""
    sane = [v for v in values if abs(v) <= MAX_SCALED] or [0.0]
    low, high = min(sane), max(sane)
    if len(sane) >= 4:
        q1, _, q3 = statistics.quantiles(sane, n=4)
        spread = q3 - q1
        low, high = max(low, q1 - 3 * spread), min(high, q3 + 3 * spread)
    return low, high


def metric_svg(name: str, points: Sequence[tuple[str, float]], link: Callable[[str], str]) -> Markup:
    """One metric across versions (ascending): a mark per version that has it, its value on hover."""
    low, high = _scale([value for _, value in points])
    room = high - low
    plot_w, plot_h = _CHART_W - 2 * _PAD, _CHART_H - 2 * _PAD + 12
    step = plot_w / max(1, len(points) - 1)
    parts = [
        f'<svg class="chart metric" viewBox="0 0 {_CHART_W} {_CHART_H}" width="{_CHART_W}"'
        f' height="{_CHART_H}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(name)} across {len(points)} versions</title>",
        f'<text class="name" x="{_PAD}" y="16">{escape(_short(name))}</text>',
        f'<line class="axis" x1="{_PAD}" x2="{_PAD}" y1="{_PAD - 10}" y2="{_PAD - 10 + plot_h}"/>',
        f'<text class="tick" x="{_PAD - 4}" y="{_PAD - 6}" text-anchor="end">{_number(high)}</text>',
        f'<text class="tick" x="{_PAD - 4}" y="{_PAD - 10 + plot_h}" text-anchor="end">{_number(low)}</text>',
    ]
    line = []
    for i, (version, value) in enumerate(points):
        cx = _PAD + (i * step if len(points) > 1 else plot_w / 2)
        off = value < low or value > high
        share = 0.5 if room <= 0 else (min(max(value, low), high) - low) / room
        cy = _PAD - 10 + (1 - share) * plot_h
        if not off:
            line.append(f"{cx:.1f},{cy:.1f}")
        css = "mark off-scale" if off else "mark"
        note = " (off the scale)" if off else ""
        title = _el("title", escape(f"{version}: {repr(value) if off else _number(value)}{note}"))
        parts.append(_el("a", _el("circle", title, class_=css, cx=cx, cy=cy, r=4), href=link(version)))
    if len(line) > 1:
        parts.insert(6, f'<polyline class="trend" points="{" ".join(line)}"/>')
    if points:
        parts.append(
            f'<text class="tick" x="{_PAD}" y="{_CHART_H - 4}">{escape(_short(points[0][0]))}</text>'
            f'<text class="tick" x="{_CHART_W - _PAD}" y="{_CHART_H - 4}" text-anchor="end">'
            f"{escape(_short(points[-1][0]))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def metric_charts(
    rows: Sequence[tuple[str, Mapping[str, Any] | None]], names: Sequence[str], link: Callable[[str], str]
) -> list[Markup]:
    """A chart per metric name (of ``names``) that some listed version holds a number for;
    ``rows``: (version, its ``metrics`` object or None), ascending."""
    charts = []
    for name in names:
        points = []
        for version, metrics in rows:
            value = numeric(metrics.get(name)) if isinstance(metrics, Mapping) else None
            if value is not None:
                points.append((version, value))
        if points:
            charts.append(metric_svg(name, points, link))
    return charts


def _number(value: float) -> str:
    return f"{value:.4g}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
