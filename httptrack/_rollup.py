"""Daily rollups of the call log, so totals and breakdowns stay instant on millions of calls.

Summing a million rows takes SQLite seconds, whatever the index; the figures people ask
for (``httptrack stats``, cost per day, per model, per user) are sums per day. One small
table, ``calls_rollup``, holds them: one row per day and *dimension value* — the day's
totals (``dim = ''``), and one row per provider, model (the one that answered), user,
service, operation and status seen that day. A million calls over 90 days make a few
tens of thousands of rows; a breakdown by one dimension reads a few hundred of them.

Each row has the counts and sums ``stats`` shows; ``calls_rollup_latency`` holds a latency
histogram per row (buckets 2% wide, cache hits left out), from which p50/p95 are estimated
to within 1% (the DDSketch method). A ``NULL`` value (no user) is stored as ``''``. Both
tables are updated with SQL upserts, so rolling up a batch costs the writer little.

The writer rolls up each batch inside its transaction (``roll_up_new_rows``), up to a
bookmark (the highest ``calls`` rowid rolled up, in ``httptrack_state``). Readers add, from
``calls`` itself, the rows past the bookmark (written by something that does not roll up)
and the partial days at the edges of a time range, so answers are always exact sums
(``Log.stats``). Questions that combine two dimensions are answered from ``calls``.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "DIMENSIONS",
    "GAMMA",
    "LATENCY_TABLE",
    "ROLLUP_TABLE",
    "Totals",
    "bookmark",
    "contribution",
    "create_rollups",
    "estimate_quantile",
    "next_day",
    "rebuild_rollups",
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
    ("calls", "INTEGER"),
    ("errors", "INTEGER"),
    ("cache_hits", "INTEGER"),
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("total_tokens", "INTEGER"),
    ("cached_input_tokens", "INTEGER"),
    ("cost_usd", "REAL"),
    ("cost_saved_usd", "REAL"),
    ("unpriced", "INTEGER"),
    ("latency_sum", "REAL"),
    ("latency_n", "INTEGER"),
)
MEASURE_NAMES = tuple(name for name, _ in _MEASURES)
_STATE = "httptrack_state"
_BOOKMARK = "rollup_rowid"
#: The ``calls`` columns a row contributes (``RAW_COLUMNS`` order is what ``Totals.add_call`` takes).
RAW_COLUMNS = (
    "status",
    "cached",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cost_usd",
    "cost_saved_usd",
    "latency_ms",
)


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


def contribution(row: Sequence[Any]) -> tuple[list[Any], int | None]:
    """What one call (its ``RAW_COLUMNS``) adds to each measure, and its latency bucket
    (``None`` when it has no latency or was a cache hit: those would flatter the provider)."""
    status, cached, inp, out, total, cached_in, cost, saved, latency = row
    timed = latency is not None and not cached
    vector = [
        1,
        int(status == "error"),
        1 if cached else 0,
        inp,
        out,
        total,
        cached_in,
        cost,
        saved,
        int(cost is None and status == "success"),
        latency if timed else None,
        1 if timed else 0,
    ]
    return vector, (_bucket(latency) if timed else None)


class Totals:
    """Sums for one group (``MEASURE_NAMES`` order; ``None`` = nothing reported) and its
    latency histogram, from rollup rows and/or calls."""

    __slots__ = ("hist", "values")

    def __init__(self) -> None:
        self.values: list[Any] = [None] * len(MEASURE_NAMES)
        self.hist: dict[int, int] = {}

    def __getitem__(self, name: str) -> Any:
        return self.values[_INDEX[name]]

    def add(self, vector: Sequence[Any], bucket: int | None = None) -> None:
        values = self.values
        for i, x in enumerate(vector):
            if x is not None:
                old = values[i]
                values[i] = x if old is None else old + x
        if bucket is not None:
            self.hist[bucket] = self.hist.get(bucket, 0) + 1

    def add_call(self, row: Sequence[Any]) -> None:
        self.add(*contribution(row))

    def copy(self) -> Totals:
        totals = Totals()
        totals.values = list(self.values)
        totals.hist = dict(self.hist)
        return totals


_INDEX = {name: i for i, name in enumerate(MEASURE_NAMES)}


# -- schema -------------------------------------------------------------------------------

LATENCY_TABLE = "calls_rollup_latency"


def create_rollups(conn: sqlite3.Connection) -> None:
    """Create the rollup tables and roll up the rows already there."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_STATE} (key TEXT PRIMARY KEY, value)")
    measures = ", ".join(f"{name} {sqltype}" for name, sqltype in _MEASURES)
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (
        dim TEXT NOT NULL, value TEXT NOT NULL, day TEXT NOT NULL, {measures},
        PRIMARY KEY (dim, value, day)) WITHOUT ROWID""")
    # The histograms: how many calls of that day and value took about GAMMA**bucket ms.
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {LATENCY_TABLE} (
        dim TEXT NOT NULL, value TEXT NOT NULL, day TEXT NOT NULL,
        bucket INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (dim, value, day, bucket)) WITHOUT ROWID""")
    roll_up_new_rows(conn)


def rollups_exist(conn: sqlite3.Connection) -> bool:
    names = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE name IN (?, ?, ?)", [ROLLUP_TABLE, LATENCY_TABLE, _STATE]
        )
    }
    return len(names) == 3


def bookmark(conn: sqlite3.Connection) -> int:
    """The highest ``calls`` rowid rolled up (0: none)."""
    row = conn.execute(f"SELECT value FROM {_STATE} WHERE key = ?", [_BOOKMARK]).fetchone()
    return int(row[0]) if row else 0


# -- maintenance (writers) ------------------------------------------------------------------

_DIM_NAMES = [d for d in DIMENSIONS if d]
_SELECT_CALLS = (
    "SELECT rowid, substr(started_at, 1, 10), "
    + ", ".join(DIMENSIONS[d] for d in _DIM_NAMES)
    + ", "
    + ", ".join(RAW_COLUMNS)
    + " FROM calls WHERE "
)


def _accumulate(
    rows: Iterable[Sequence[Any]], pause: Callable[[], None] | None = None
) -> tuple[dict[tuple[str, str, str], Totals], int]:
    """(dim, value, day) -> Totals for these ``_SELECT_CALLS`` rows, and their top rowid.

    Each group's sums are added up in row order, as one pass adding every row to its seven
    groups would. But a dimension with one value over a day's rows (the provider, the
    service, the status of most batches) has the same rows, in the same order, as the day's
    totals: its group is a copy of those, not a second pass over the rows."""
    groups: dict[tuple[str, str, str], Totals] = {}
    first_raw = 2 + len(_DIM_NAMES)
    top = 0
    days: dict[str, list[tuple[list[Any], int | None, Sequence[Any]]]] = {}
    for count, row in enumerate(rows):
        if pause is not None and not count % 64:
            pause()
        if row[0] > top:
            top = row[0]
        vector, bucket = contribution(row[first_raw:])
        day_rows = days.get(row[1])
        if day_rows is None:
            day_rows = days[row[1]] = []
        day_rows.append((vector, bucket, row[2:first_raw]))
    for day, day_rows in days.items():
        if pause is not None:
            pause()
        whole = groups[("", "", day)] = Totals()
        for vector, bucket, _ in day_rows:
            whole.add(vector, bucket)
        for i, dim in enumerate(_DIM_NAMES):
            first = day_rows[0][2][i]
            if all(dims[i] == first and type(dims[i]) is type(first) for _, _, dims in day_rows):
                groups[(dim, "" if first is None else str(first), day)] = whole.copy()
                continue
            for vector, bucket, dims in day_rows:
                value = dims[i]
                key = (dim, "" if value is None else str(value), day)
                totals = groups.get(key)
                if totals is None:
                    totals = groups[key] = Totals()
                totals.add(vector, bucket)
    return groups, top


def _upsert_sql() -> tuple[str, str]:
    def plus(m: str) -> str:  # NULL + NULL stays NULL ("not reported"), NULL + x is x
        return (
            f"{m} = CASE WHEN excluded.{m} IS NULL THEN {ROLLUP_TABLE}.{m} "
            f"ELSE coalesce({ROLLUP_TABLE}.{m}, 0) + excluded.{m} END"
        )

    columns = ", ".join(("dim", "value", "day", *MEASURE_NAMES))
    marks = ", ".join("?" * (3 + len(MEASURE_NAMES)))
    measures = (
        f"INSERT INTO {ROLLUP_TABLE} ({columns}) VALUES ({marks}) ON CONFLICT (dim, value, day) "
        f"DO UPDATE SET {', '.join(plus(m) for m in MEASURE_NAMES)}"
    )
    latency = (
        f"INSERT INTO {LATENCY_TABLE} (dim, value, day, bucket, n) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (dim, value, day, bucket) DO UPDATE SET n = n + excluded.n"
    )
    return measures, latency


_UPSERT_MEASURES, _UPSERT_LATENCY = _upsert_sql()


def _merge_into(conn: sqlite3.Connection, groups: dict[tuple[str, str, str], Totals]) -> None:
    # Additions done by SQLite in two executemany calls: no read-modify-write in Python.
    conn.executemany(_UPSERT_MEASURES, [[*key, *t.values] for key, t in groups.items()])
    conn.executemany(_UPSERT_LATENCY, [[*key, b, n] for key, t in groups.items() for b, n in t.hist.items()])


def _set_bookmark(conn: sqlite3.Connection, rowid: int) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {_STATE} (key, value) VALUES (?, ?)", [_BOOKMARK, rowid])


def roll_up_new_rows(conn: sqlite3.Connection, pause: Callable[[], None] | None = None) -> int:
    """Add the calls past the bookmark to the rollup (the writer calls this in each
    batch's transaction). Returns how many calls were rolled up. ``pause`` is called now
    and then (the writer lets the app's threads have the GIL)."""
    cursor = conn.execute(_SELECT_CALLS + "rowid > ? ORDER BY rowid", [bookmark(conn)])
    total = 0
    while True:
        rows = cursor.fetchmany(100_000)
        if not rows:
            break
        groups, top = _accumulate(rows, pause)
        _merge_into(conn, groups)
        _set_bookmark(conn, top)
        total += len(rows)
    return total


def recompute_days(conn: sqlite3.Connection, first_day: str | None, last_day: str) -> None:
    """Roll up the days from ``first_day`` (``None``: the beginning) to ``last_day``
    (inclusive) again from ``calls``, after rows of those days were deleted."""
    span = "day <= ?" + (" AND day >= ?" if first_day else "")
    for table in (ROLLUP_TABLE, LATENCY_TABLE):
        conn.execute(f"DELETE FROM {table} WHERE {span}", [last_day] + ([first_day] if first_day else []))
    where = "rowid <= ? AND started_at < ?" + (" AND started_at >= ?" if first_day else "")
    params = [bookmark(conn), next_day(last_day)] + ([first_day] if first_day else [])
    groups, _ = _accumulate(conn.execute(_SELECT_CALLS + where, params).fetchall())
    _merge_into(conn, groups)


def rebuild_rollups(conn: sqlite3.Connection) -> None:
    """Roll everything up again from ``calls`` (after the table was edited by hand)."""
    for table in (ROLLUP_TABLE, LATENCY_TABLE):
        conn.execute(f"DELETE FROM {table}")
    _set_bookmark(conn, 0)
    roll_up_new_rows(conn)


def next_day(day: str) -> str:
    """``2026-01-31`` → ``2026-02-01``."""
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
