"""Terminal output: aligned tables that fit the window, and figures people read at a glance
(``1,234``, ``$0.0123``, ``1.2 s``)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

__all__ = [
    "Column",
    "count",
    "duration",
    "limit_amount",
    "money",
    "percent",
    "plain_number",
    "render_table",
    "short_time",
    "time_left",
]

NONE = "-"


def count(value: Any) -> str:
    return NONE if value is None else f"{int(value):,}"


def money(value: Any) -> str:
    """Dollars with as many decimals as a small figure needs to say something, never a
    trailing zero past the cents: ``$1,234.50``, ``$1.25``, ``$0.50``, ``$0.0123``,
    ``$0.008``, ``$0.000348``."""
    if value is None:
        return NONE
    value = float(value)
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    # Three significant digits, however small, and at least the cents: $0.0123, $0.0000093.
    decimals = min(12, max(2, 2 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}".rstrip("0")
    if len(text.partition(".")[2]) < 2:
        text = f"{value:.2f}"
    return f"${text}" if value > 0 else f"-${text[1:]}"


def plain_number(value: Any) -> str:
    """A figure as a decimal, never in exponent form (``0.000049``, not ``4.9e-05``): for
    CSV and other text a spreadsheet reads."""
    if not isinstance(value, float) or not math.isfinite(value):
        return "" if value is None else str(value)
    text = repr(value)
    # The same shortest digits as repr, written out: exact, no float noise.
    return text if "e" not in text else format(Decimal(text), "f")


def duration(ms: Any) -> str:
    if ms is None:
        return NONE
    ms = float(ms)
    if ms < 9.95:  # a local model, a cache hit: "0 ms" would say nothing
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60_000:.1f} min"


def time_left(seconds: float) -> str:
    """Seconds until something happens (a limit's window resets), rounded up: ``45s``,
    ``4m05s``, ``12h00m``, ``3d04h``."""
    seconds = max(math.ceil(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def limit_amount(metric: str, value: float) -> str:
    """A limit's figure: dollars for a ``usd`` limit, a whole count for the others."""
    return money(value) if metric == "usd" else count(round(value))


def percent(rate: Any) -> str:
    return NONE if rate is None else f"{float(rate) * 100:.1f}%"


def short_time(iso: str | None) -> str:
    """``2026-01-31T12:34:56.789Z`` → ``2026-01-31 12:34:56``."""
    return NONE if not iso else iso[:19].replace("T", " ")


class Column:
    """A table column: its header, alignment, and whether it may be cut to fit the window."""

    def __init__(self, header: str, *, right: bool = False, shrink: bool = False, min_width: int = 6) -> None:
        self.header = header
        self.right = right
        self.shrink = shrink
        self.min_width = min_width


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int | None = None
) -> str:
    """The rows as an aligned table. When it is wider than ``width`` (default: the
    terminal's, when there is one), the shrinkable columns are cut, longest first."""
    widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if width is None:
        width = shutil.get_terminal_size((10_000, 24)).columns
    gap = 2
    excess = sum(widths) + gap * (len(widths) - 1) - width
    while excess > 0:
        candidates = [
            i for i, c in enumerate(columns) if c.shrink and widths[i] > max(c.min_width, len(c.header))
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, col, w in zip(cells, columns, widths, strict=True):
            if len(cell) > w:
                cell = cell[: max(w - 1, 0)] + "…"
            out.append(cell.rjust(w) if col.right else cell.ljust(w))
        return (" " * gap).join(out).rstrip()

    lines = [line([c.header for c in columns]), line(["─" * w for w in widths])]
    lines.extend(line(r) for r in rows)
    return "\n".join(lines)
