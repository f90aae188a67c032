"""Daily rollups of the call log, so totals and breakdowns stay instant on millions of calls.

Summing a million rows takes SQLite seconds, whatever the index; the figures people ask
for (``httptrack stats``, cost per day, per model, per user) are sums per day. One small
table, ``calls_rollup``, holds them: one row per day and *dimension value* — the day's
totals (``dim = ''``), and one row per provider, model (the one that answered), user,
service, operation and status seen that day. A million calls over 90 days make a few
tens of thousands of rows; a breakdown by one dimension reads a few hundred of them.

Each row has the counts and sums ``stats`` shows and a latency histogram (``latency_hist``,
JSON ``{bucket: count}``, buckets 2% wide, cache hits left out), from which p50/p95 are
estimated to within 1% (the DDSketch method). A ``NULL`` value (no user) is stored as ``''``.

The writer rolls up each batch inside its transaction (``roll_up_new_rows``), up to a
bookmark (the highest ``calls`` rowid rolled up, in ``httptrack_state``). Readers add, from
``calls`` itself, the rows past the bookmark (written by something that does not roll up)
and the partial days at the edges of a time range, so answers are always exact sums
(``Log.stats``). Questions that combine two dimensions are answered from ``calls``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DIMENSIONS",
    "GAMMA",
    "ROLLUP_TABLE",
    "Totals",
    "bookmark",
    "create_rollups",
    "estimate_quantile",
    "rebuild_rollups",
    "next_day",
    "parse_hist",
    "recompute_days",
    "roll_up_new_rows",
    "rollups_exist",
]

#: Histogram bucket width: bucket ``b`` holds latencies in (GAMMA**(b-1), GAMMA**b] ms.
GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
#: Latencies below this (ms) share the lowest bucket.
_MIN_MS = 0.01

ROLLUP_TABLE = "calls_rollup"
#: dimension -> the SQL expression over ``calls`` it rolls up by ('' = the day's totals).
DIMENSIONS: dict[str, str] = {
    "": "''",
    "provider": "provider",
    "model": "coalesce(response_model, model)",
    "user": "user",
    "service": "service",
    "operation": "operation",
    "status": "status",
}
#: Summed measures, as (rollup column, SQL type).
_MEASURES = (
    ("calls", "INTEGER"), ("errors", "INTEGER"), ("cache_hits", "INTEGER"), ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"), ("total_tokens", "INTEGER"), ("cached_input_tokens", "INTEGER"),
    ("cost_usd", "REAL"), ("cost_saved_usd", "REAL"), ("unpriced", "INTEGER"), ("latency_sum", "REAL"),
    ("latency_n", "INTEGER"),
)  # fmt: skip
MEASURE_NAMES = tuple(name for name, _ in _MEASURES)
_STATE = "httptrack_state"
_BOOKMARK = "rollup_rowid"
#: The ``calls`` columns a row contributes (``RAW_COLUMNS`` order is what ``Totals.add_call`` takes).
RAW_COLUMNS = ("status", "cached", "input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
               "cost_usd", "cost_saved_usd", "latency_ms")  # fmt: skip


def _bucket(ms: float) -> int:
    return math.ceil(math.log(max(ms, _MIN_MS)) / _LOG_GAMMA)


def estimate_quantile(hist: dict[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) from a histogram, within 1%."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            # The value minimising the relative error over the bucket (GAMMA**(b-1), GAMMA**b].
            value = 2 * GAMMA**b / (GAMMA + 1)
            return float(f"{value:.4g}")
    return None  # pragma: no cover


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass
class Totals:
    """Sums for one group, from rollup rows and/or raw calls."""

    values: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(MEASURE_NAMES))
    hist: dict[int, int] = field(default_factory=dict)

    def add_call(self, row: Sequence[Any]) -> None:
        status, cached, inp, out, total, cached_in, cost, saved, latency = row
        v = self.values
        v["calls"] = (v["calls"] or 0) + 1
        v["errors"] = (v["errors"] or 0) + (status == "error")
        v["cache_hits"] = (v["cache_hits"] or 0) + (1 if cached else 0)
        v["unpriced"] = (v["unpriced"] or 0) + (cost is None and status == "success")
        for key, value in (("input_tokens", inp), ("output_tokens", out), ("total_tokens", total),
                           ("cached_input_tokens", cached_in), ("cost_usd", cost), ("cost_saved_usd", saved)):  # fmt: skip
            if value is not None:
                v[key] = _add(v[key], value)
        if latency is not None and not cached:  # cache hits would flatter the provider
            v["latency_sum"] = _add(v["latency_sum"], latency)
            v["latency_n"] = (v["latency_n"] or 0) + 1
            b = _bucket(latency)
            self.hist[b] = self.hist.get(b, 0) + 1

    def add_totals(self, values: dict[str, Any], hist: dict[int, int]) -> None:
        for key in MEASURE_NAMES:
            self.values[key] = _add(self.values[key], values.get(key))
        for b, n in hist.items():
            self.hist[b] = self.hist.get(b, 0) + n

    def hist_json(self) -> str | None:
        return json.dumps({str(b): n for b, n in sorted(self.hist.items())}) if self.hist else None


def parse_hist(text: str | None) -> dict[int, int]:
    return {int(b): int(n) for b, n in json.loads(text).items()} if text else {}


# -- schema -------------------------------------------------------------------------------


def create_rollups(conn: sqlite3.Connection) -> None:
    """Create the rollup table and roll up the rows already there."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_STATE} (key TEXT PRIMARY KEY, value)")
    measures = ", ".join(f"{name} {sqltype}" for name, sqltype in _MEASURES)
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (
        day TEXT NOT NULL, dim TEXT NOT NULL, value TEXT NOT NULL, {measures}, latency_hist TEXT,
        PRIMARY KEY (dim, value, day))""")
    roll_up_new_rows(conn)


def rollups_exist(conn: sqlite3.Connection) -> bool:
    names = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE name IN (?, ?)", [ROLLUP_TABLE, _STATE])}  # fmt: skip
    return len(names) == 2


def bookmark(conn: sqlite3.Connection) -> int:
    """The highest ``calls`` rowid rolled up (0: none)."""
    row = conn.execute(f"SELECT value FROM {_STATE} WHERE key = ?", [_BOOKMARK]).fetchone()
    return int(row[0]) if row else 0


# -- maintenance (writers) ------------------------------------------------------------------

_DIM_NAMES = [d for d in DIMENSIONS if d]
_SELECT_CALLS = (
    "SELECT rowid, substr(started_at, 1, 10), "
    + ", ".join(DIMENSIONS[d] for d in _DIM_NAMES)
    + ", " + ", ".join(RAW_COLUMNS) + " FROM calls WHERE "
)  # fmt: skip


def _accumulate(rows: Iterable[Sequence[Any]]) -> tuple[dict[tuple[str, str, str], Totals], int]:
    """(day, dim, value) -> Totals for these ``_SELECT_CALLS`` rows, and their top rowid."""
    groups: dict[tuple[str, str, str], Totals] = {}
    first_raw = 2 + len(_DIM_NAMES)
    top = 0
    for row in rows:
        top = max(top, row[0])
        day = row[1]
        raw = row[first_raw:]
        keys = [(day, "", "")]
        keys.extend((day, dim, "" if row[2 + i] is None else str(row[2 + i])) for i, dim in enumerate(_DIM_NAMES))
        for key in keys:
            totals = groups.get(key)
            if totals is None:
                totals = groups[key] = Totals()
            totals.add_call(raw)
    return groups, top


def _merge_into(conn: sqlite3.Connection, groups: dict[tuple[str, str, str], Totals]) -> None:
    columns = ", ".join(("day", "dim", "value", *MEASURE_NAMES, "latency_hist"))
    marks = ", ".join("?" * (3 + len(MEASURE_NAMES) + 1))
    select = f"SELECT {', '.join(MEASURE_NAMES)}, latency_hist FROM {ROLLUP_TABLE} WHERE dim = ? AND value = ? AND day = ?"
    rows = []
    for (day, dim, value), totals in groups.items():
        old = conn.execute(select, [dim, value, day]).fetchone()
        if old is not None:
            totals.add_totals(dict(zip(MEASURE_NAMES, old, strict=False)), parse_hist(old[-1]))
        rows.append([day, dim, value, *(totals.values[m] for m in MEASURE_NAMES), totals.hist_json()])
    conn.executemany(f"INSERT OR REPLACE INTO {ROLLUP_TABLE} ({columns}) VALUES ({marks})", rows)


def _set_bookmark(conn: sqlite3.Connection, rowid: int) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {_STATE} (key, value) VALUES (?, ?)", [_BOOKMARK, rowid])


def roll_up_new_rows(conn: sqlite3.Connection) -> int:
    """Add the calls past the bookmark to the rollup (the writer calls this in each
    batch's transaction). Returns how many calls were rolled up."""
    cursor = conn.execute(_SELECT_CALLS + "rowid > ? ORDER BY rowid", [bookmark(conn)])
    total = 0
    while True:
        rows = cursor.fetchmany(100_000)
        if not rows:
            break
        groups, top = _accumulate(rows)
        _merge_into(conn, groups)
        _set_bookmark(conn, top)
        total += len(rows)
    return total


def recompute_days(conn: sqlite3.Connection, first_day: str | None, last_day: str) -> None:
    """Roll up the days from ``first_day`` (``None``: the beginning) to ``last_day``
    (inclusive) again from ``calls``, after rows of those days were deleted."""
    span = "day <= ?" + (" AND day >= ?" if first_day else "")
    conn.execute(f"DELETE FROM {ROLLUP_TABLE} WHERE {span}", [last_day] + ([first_day] if first_day else []))
    where = "rowid <= ? AND started_at < ?" + (" AND started_at >= ?" if first_day else "")
    params = [bookmark(conn), next_day(last_day)] + ([first_day] if first_day else [])
    groups, _ = _accumulate(conn.execute(_SELECT_CALLS + where, params).fetchall())
    _merge_into(conn, groups)


def rebuild_rollups(conn: sqlite3.Connection) -> None:
    """Roll everything up again from ``calls`` (after the table was edited by hand)."""
    conn.execute(f"DELETE FROM {ROLLUP_TABLE}")
    _set_bookmark(conn, 0)
    roll_up_new_rows(conn)


def next_day(day: str) -> str:
    """``2026-01-31`` → ``2026-02-01``."""
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
