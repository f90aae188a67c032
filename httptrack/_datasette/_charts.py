"""Small charts drawn as inline SVG on the server: no JavaScript, nothing fetched, so the
dashboard works offline and is checked by tests like any other HTML. Each bar carries a
``<title>`` (the browser shows it on hover) with its exact figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

__all__ = ["ERROR_COLOR", "PALETTE", "ZERO_COLOR", "column_chart", "stacked_bar_chart"]

#: Colour-blind-safe (Okabe and Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
#: Errors: Okabe and Ito's vermillion, never a green.
ERROR_COLOR = "#D55E00"
#: A day (or group) of zero: a thin grey line on the axis, so that it reads as a zero, not a gap.
ZERO_COLOR = "#bbb"
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _nice_max(value: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value * (1 - 1e-9))


def column_chart(
    points: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str],
    title: str,
    axis: Callable[[float], str] | None = None,
    color: str = PALETTE[0],
    width: int = 760,
    height: int = 220,
) -> str:
    """Vertical bars, one per point (e.g. cost per day, oldest on the left). ``fmt``
    formats each bar's figure, ``axis`` (default ``fmt``) the gridlines' values."""
    if not points:
        return f'<p class="httptrack-empty">{escape(title)}: nothing to show yet.</p>'
    left, right, top, bottom = 64, 8, 20, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max(v for _, v in points))
    slot = plot_w / len(points)
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg class="httptrack-chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # gridlines with their value
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{escape((axis or fmt)(peak * i / 4))}</text>"
        )
    every = max(1, round(len(points) / 8))  # at most ~8 labels under the bars
    for i, (label, value) in enumerate(points):
        h = plot_h * value / peak
        fill = color
        if h < 1.5:  # zero (or next to it): drawn as a line on the axis, never left out
            h, fill = 1.5, (color if value else ZERO_COLOR)
        x = left + i * slot + (slot - bar) / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{fill}" '
            f'data-value="{value!r}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
        )
        # Every few bars, counting from the newest, so the latest day is always labelled.
        if (len(points) - 1 - i) % every == 0:
            last = i == len(points) - 1  # kept inside the chart: aligned on its bar's right edge
            parts.append(
                f'<text x="{x + (bar if last else bar / 2):.1f}" y="{height - bottom + 16}" '
                f'text-anchor="{"end" if last else "middle"}" fill="#555">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar_chart(
    rows: Sequence[tuple[str, Sequence[float]]],
    *,
    series: Sequence[str],
    fmt: Callable[[float], str],
    title: str,
    colors: Sequence[str] = PALETTE,
    width: int = 760,
) -> str:
    """Horizontal bars, one per row, each split into ``series`` (e.g. input and output
    tokens per model) drawn in ``colors``, largest first as given, with a legend."""
    if not rows:
        return f'<p class="httptrack-empty">{escape(title)}: nothing to show yet.</p>'
    label_w, right, row_h, top = 210, 90, 22, 26
    plot_w = width - label_w - right
    height = top + row_h * len(rows) + 8
    peak = max(sum(values) for _, values in rows) or 1.0
    parts = [
        f'<svg class="httptrack-chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
        f"<title>{escape(title)}</title>",
    ]
    x = label_w
    for i, name in enumerate(series):  # legend
        color = colors[i % len(colors)]
        parts.append(
            f'<rect x="{x}" y="4" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="13" fill="#333">{escape(name)}</text>'
        )
        x += 18 + 7 * len(name) + 16
    for r, (label, values) in enumerate(rows):
        y = top + r * row_h
        shown = label if len(label) <= 32 else label[:31] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" fill="#333">{escape(shown)}</text>'
        )
        x0 = float(label_w)
        for i, value in enumerate(values):
            w = plot_w * value / peak
            if w <= 0:
                continue
            parts.append(
                f'<rect x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                f'fill="{colors[i % len(colors)]}"><title>{escape(label)}, {escape(series[i])}: '
                f"{escape(fmt(value))}</title></rect>"
            )
            x0 += w
        parts.append(f'<text x="{x0 + 6:.1f}" y="{y + 14}" fill="#555">{escape(fmt(sum(values)))}</text>')
    parts.append("</svg>")
    return "".join(parts)
