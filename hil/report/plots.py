"""Inline SVG plots for the HTML report: a line chart over time and a dot chart against limits.

Made here rather than by a chart library so the report opens anywhere with no network and no
script: every plot is plain SVG with its axes, labels and limit lines drawn, a `<title>` and
`<desc>` for screen readers, and a tooltip (`<title>`) on every data point. All text that
reaches the SVG is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569")
PASS = "#2563eb"
FAIL = "#dc2626"
LIMIT = "#dc2626"
INK = "#1f2937"
GRID = "#e5e7eb"
CHAR_PX = 6.2  # average width of a character at the plots' 11 px font, for layout
LABEL_CHARS = 42  # a longer dot chart label keeps its end, where tests' names differ
OFF_SCALE = 3.0  # a limit further than this times the data's extent is noted, not drawn


@dataclass(frozen=True)
class Series:
    """Points (x, y) drawn as one series: joined straight or as steps, with markers."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    line: str = "straight"  # "straight", "step" or "none"
    marker: str = "circle"  # "circle", "cross" or "none"
    notes: Sequence[str] = ()  # a tooltip per point
    point_colours: Sequence[str] = ()  # a marker colour per point, else `colour`


@dataclass(frozen=True)
class Limit:
    value: float
    label: str  # "high" or "low", or any short word


@dataclass(frozen=True)
class Row:
    """One labelled value of a dot chart."""

    label: str
    value: float
    passed: bool
    note: str = ""


def fmt(value: float) -> str:
    """A number as people read it in a plot: 3 significant digits, no trailing zeros."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten) covering low..high."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _span(values: Sequence[float], limits: Sequence[Limit], from_zero: bool) -> tuple:
    """(low, high, limits drawn, limits off scale) of an axis showing `values`."""
    low, high = min(values), max(values)
    if from_zero and low >= 0:
        low = 0.0
    extent = (high - low) or abs(high) or 1.0
    drawn, off = [], []
    for limit in limits:
        near = low - extent * (OFF_SCALE - 1) <= limit.value <= high + extent * (OFF_SCALE - 1)
        (drawn if near else off).append(limit)
    for limit in drawn:
        low, high = min(low, limit.value), max(high, limit.value)
    ticks = nice_ticks(low, high)
    return ticks[0], ticks[-1], drawn, off, ticks


def _svg_open(width: float, height: float, title: str, desc: str, points: int) -> list[str]:
    return [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'data-points="{points}" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        f'<text x="8" y="16" font-size="13" font-weight="600" fill="{INK}">{escape(title)}</text>',
    ]


def _marker(x: float, y: float, kind: str, colour: str, note: str, cls: str = "point") -> str:
    """A data point (class "point", with its tooltip) or a legend's key (class "key")."""
    tip = f"<title>{escape(note)}</title>" if note else ""
    if kind == "cross":
        a, b, c, e = x - 3.5, x + 3.5, y - 3.5, y + 3.5
        d = f"M{a:.1f},{c:.1f}L{b:.1f},{e:.1f}M{a:.1f},{e:.1f}L{b:.1f},{c:.1f}"
        return f'<path class="{cls}" d="{d}" stroke="{colour}" stroke-width="2">{tip}</path>'
    return (
        f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{colour}" '
        f'stroke="white" stroke-width="0.8">{tip}</circle>'
    )


def _legend(items: Sequence[tuple[str, str, str]], x0: float, y0: float, width: float) -> tuple:
    """Legend entries (name, colour, marker) flowed in rows; returns (svg parts, height)."""
    parts, x, y = [], x0, y0
    for name, colour, marker in items:
        item_w = 22 + len(name) * CHAR_PX + 14
        if x > x0 and x + item_w > width:
            x, y = x0, y + 16
        if marker == "line":
            parts.append(
                f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 14:.1f}" y2="{y - 4:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        else:
            parts.append(_marker(x + 7, y - 4, marker, colour, "", cls="key"))
        parts.append(f'<text x="{x + 20:.1f}" y="{y:.1f}" fill="{INK}">{escape(name)}</text>')
        x += item_w
    return parts, (y - y0 + 16 if items else 0)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    limits: Sequence[Limit] = (),
    x_ticks: Sequence[tuple[float, str]] | None = None,
    legend: Sequence[tuple[str, str, str]] | None = None,
    width: float = 560,
    height: float = 240,
) -> str:
    """Series over a shared x axis, with horizontal limit lines; `legend` defaults to series."""
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    ys = [y for s in series for _, y in s.points] or [0.0, 1.0]
    y0, y1, drawn, off, y_ticks = _span(ys, limits, from_zero=True)
    x_lo, x_hi = min(xs), max(xs)
    if x_ticks is None:
        ticks = nice_ticks(x_lo, x_hi)
        x_lo, x_hi = ticks[0], ticks[-1]
        x_ticks = [(t, fmt(t)) for t in ticks]
    elif x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    entries = list(legend) if legend is not None else [(s.name, s.colour, s.marker) for s in series]
    left = 14 + max(len(fmt(t)) for t in y_ticks) * CHAR_PX + 16
    right, top = 16, 30
    _, legend_h = _legend(entries, left, 0, width - right)
    bottom = 40 + legend_h
    plot_w, plot_h = width - left - right, height - top - bottom
    total = sum(len(s.points) for s in series)
    desc = f"{y_label} against {x_label}; " + "; ".join(
        f"{s.name}: {len(s.points)} points" for s in series
    )

    def sx(x: float) -> float:
        return left + (x - x_lo) / ((x_hi - x_lo) or 1.0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    out = _svg_open(width, height, title, desc, total)
    for tick in y_ticks:
        out.append(
            f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + plot_w:.1f}" y2="{sy(tick):.1f}" '
            f'stroke="{GRID}"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end" '
            f'fill="{INK}">{fmt(tick)}</text>'
        )
    for x, text in x_ticks:
        half = len(text) * CHAR_PX / 2  # a label at the edge is kept inside the plot's width
        anchor = "end" if sx(x) + half > width - 2 else "start" if sx(x) - half < 2 else "middle"
        out.append(
            f'<line x1="{sx(x):.1f}" y1="{top + plot_h}" x2="{sx(x):.1f}" y2="{top + plot_h + 4}" '
            f'stroke="{INK}"/><text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" '
            f'fill="{INK}">{escape(text)}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="none" '
        f'stroke="#9ca3af"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 32}" text-anchor="middle" '
        f'fill="{INK}">{escape(x_label)}</text>'
        f'<text transform="translate(12,{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'fill="{INK}">{escape(y_label)}</text>'
    )
    for limit in drawn:
        y = sy(limit.value)
        out.append(
            f'<line class="limit" x1="{left}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" '
            f'stroke="{LIMIT}" stroke-dasharray="5 3"/><text x="{left + plot_w - 4:.1f}" '
            f'y="{y - 4:.1f}" text-anchor="end" fill="{LIMIT}">'
            f"{escape(limit.label)} {fmt(limit.value)}</text>"
        )
    for n, limit in enumerate(off):
        out.append(
            f'<text x="{left + plot_w - 4:.1f}" y="{top + 12 + 13 * n}" text-anchor="end" '
            f'fill="{LIMIT}">{escape(limit.label)} {fmt(limit.value)} (off scale)</text>'
        )
    for s in series:
        pts = [(sx(x), sy(y)) for x, y in s.points]
        if s.line != "none" and len(pts) > 1:
            path = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
            for qx, qy in pts[1:]:
                path += f"H{qx:.1f}V{qy:.1f}" if s.line == "step" else f"L{qx:.1f},{qy:.1f}"
            out.append(
                f'<path d="{path}" fill="none" stroke="{s.colour}" stroke-width="1.6" '
                f'stroke-linejoin="round"/>'
            )
        if s.marker != "none":
            for n, (px, py) in enumerate(pts):
                colour = s.point_colours[n] if n < len(s.point_colours) else s.colour
                note = s.notes[n] if n < len(s.notes) else f"{s.name}: {fmt(s.points[n][1])}"
                out.append(_marker(px, py, s.marker, colour, note))
    parts, _ = _legend(entries, left, height - legend_h + 8, width - right)
    out.extend(parts)
    out.append("</svg>")
    return "".join(out)


def dot_chart(
    rows: Sequence[Row],
    *,
    title: str,
    unit: str,
    low: float | None = None,
    high: float | None = None,
    width: float = 640,
) -> str:
    """One row per labelled value on a horizontal axis, with the limits as vertical lines.

    A value out of its limits is a red cross, so the verdict does not rest on colour alone.
    A long label is cut at its start; the whole label is its tooltip.
    """
    limits = [Limit(v, w) for v, w in ((low, "low"), (high, "high")) if v is not None]
    values = [r.value for r in rows] or [0.0]
    x0, x1, drawn, off, ticks = _span(values, limits, from_zero=True)
    label_w = min(max((len(r.label) for r in rows), default=4), LABEL_CHARS + 1) * CHAR_PX + 16
    left, right, top, row_h = label_w, 70, 30 + 13 * len(off), 20
    plot_w = width - left - right
    height = top + row_h * max(len(rows), 1) + 38
    desc = f"{title}: {len(rows)} values in {unit}" + "".join(
        f"; {limit.label} limit {fmt(limit.value)} {unit}" for limit in limits
    )

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    bottom = top + row_h * max(len(rows), 1)
    out = _svg_open(width, height, title, desc, len(rows))
    for n in range(1, len(rows), 2):
        out.append(
            f'<rect x="0" y="{top + row_h * n}" width="{width}" height="{row_h}" fill="#f6f7f9"/>'
        )
    for tick in ticks:
        out.append(
            f'<line x1="{sx(tick):.1f}" y1="{top}" x2="{sx(tick):.1f}" y2="{bottom}" '
            f'stroke="{GRID}"/><text x="{sx(tick):.1f}" y="{bottom + 14}" text-anchor="middle" '
            f'fill="{INK}">{fmt(tick)}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w:.1f}" y2="{bottom}" stroke="#9ca3af"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 30}" text-anchor="middle" '
        f'fill="{INK}">{escape(unit)}</text>'
    )
    for limit in drawn:
        x = sx(limit.value)
        out.append(
            f'<line class="limit" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="{LIMIT}" stroke-dasharray="5 3"/><text x="{x:.1f}" y="{top - 7}" '
            f'text-anchor="middle" fill="{LIMIT}">{escape(limit.label)} {fmt(limit.value)}</text>'
        )
    for n, limit in enumerate(off):
        out.append(
            f'<text x="{width - 8}" y="{30 + 13 * n}" text-anchor="end" fill="{LIMIT}">'
            f"{escape(limit.label)} limit {fmt(limit.value)} {escape(unit)} (off scale)</text>"
        )
    for n, row in enumerate(rows):
        y = top + row_h * n + row_h / 2
        label = row.label if len(row.label) <= LABEL_CHARS else "…" + row.label[-LABEL_CHARS:]
        colour = PASS if row.passed else FAIL
        verdict = "" if row.passed else " (out of limits)"
        note = row.note or f"{row.label}: {fmt(row.value)} {unit}{verdict}"
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{INK}">'
            f"<title>{escape(row.label)}</title>{escape(label)}</text>"
        )
        out.append(_marker(sx(row.value), y, "circle" if row.passed else "cross", colour, note))
        out.append(
            f'<text x="{sx(row.value) + 7:.1f}" y="{y + 4:.1f}" fill="{colour}">'
            f"{fmt(row.value)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
