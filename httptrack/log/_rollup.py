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

A second pair of tables, ``calls_rollup_detail`` and ``calls_rollup_detail_latency``,
holds the same sums per day and *combination* of the dimensions with few values: provider,
model asked for, model that answered, operation, status and cached (a hundred or so rows a
day). They answer the questions that combine those (``stats --provider openai --by model``,
``stats --cached``, ``--status error --by operation``).

A third, ``calls_rollup_combo``, holds the sums per day and combination of the user, the
service and the detail rollup's columns, each row with its latency histogram as a small
blob (``(bucket, n)`` pairs): the questions that combine a user or a service with another
dimension (``stats -u alice --by model``, ``stats --service ingest --by user``, the calls
page filtered by user and provider). Its rows are sparse (a few per user and day on a
million calls: about half a row per call), so histograms in a table of their own would
cost a row per call. A log that had calls before the table existed (migration m005) is
rolled up into it a step at a time by the writer (``COMBO_STEP`` calls per step), oldest
first; readers use it once it is nearly caught up (``COMBO_MAX_LAG``).

The writer does not roll up each batch as it writes it: it calls ``roll_up_new_rows`` (in
a write transaction) at most once a second or every ``DERIVE_ROWS`` calls, and at every
``flush()`` (``_store``). Each table family has a bookmark (the highest ``calls`` rowid it
holds, in ``httptrack_state``). Readers add, from ``calls`` itself, the rows past the
bookmark (not rolled up yet, or written by something that does not roll up) and the
partial days at the edges of a time range, so ``Log.stats`` answers are always exact sums.
The views that read the rollup (``cost_per_day``, ``cost_by_model``, ...) do not: they may
lag the newest calls by about a second. Other questions combining two dimensions, and
full-text searches, are answered from ``calls``.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "BOOKMARK_KEY",
    "BUCKET_FUNCTION",
    "COMBO_BOOKMARK_KEY",
    "COMBO_COLUMNS",
    "COMBO_FILTERS",
    "COMBO_GROUPS",
    "COMBO_MAX_LAG",
    "COMBO_STEP",
    "COMBO_TABLE",
    "DETAIL_BOOKMARK_KEY",
    "DETAIL_COLUMNS",
    "DETAIL_FILTERS",
    "DETAIL_GROUPS",
    "DETAIL_LATENCY_TABLE",
    "DETAIL_TABLE",
    "DIMENSIONS",
    "GAMMA",
    "HIST_FUNCTION",
    "LATENCY_TABLE",
    "ROLLUP_TABLE",
    "STATE_TABLE",
    "Totals",
    "bookmark",
    "combo_bookmark",
    "combo_lag",
    "combo_rollup_exists",
    "contribution",
    "create_combo_rollup",
    "create_detail_rollups",
    "create_rollups",
    "decode_hist",
    "detail_bookmark",
    "detail_rollups_exist",
    "encode_hist",
    "estimate_quantile",
    "next_day",
    "rebuild_rollups",
    "recompute_days",
    "register_hist_function",
    "roll_up_new_rows",
    "rollups_exist",
]

_BIG_ENDIAN = sys.byteorder == "big"
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
_MEASURE_COLUMNS = ", ".join(f"{name} {sqltype}" for name, sqltype in _MEASURES)  # for CREATE TABLE
#: A key/value table; the rollups' bookmarks (the highest rowid each holds) are kept there.
STATE_TABLE = "httptrack_state"
BOOKMARK_KEY = "rollup_rowid"
DETAIL_BOOKMARK_KEY = "rollup_detail_rowid"
DETAIL_TABLE = "calls_rollup_detail"
DETAIL_LATENCY_TABLE = "calls_rollup_detail_latency"
#: The detail rollup's key after the day: the ``calls`` columns with few values. ``NULL`` is
#: stored as ``''``, ``cached`` as text (``'0'``, ``'1'``).
DETAIL_COLUMNS = ("provider", "model", "response_model", "operation", "status", "cached")
#: Filters the detail rollup can apply, and ``stats(by=...)`` groups it can make (SQL over
#: its columns).
DETAIL_FILTERS = frozenset({"provider", "model", "operation", "status", "cached"})
DETAIL_GROUPS = {
    "provider": "nullif(provider, '')",
    "model": "coalesce(nullif(response_model, ''), nullif(model, ''))",
    "requested_model": "nullif(model, '')",
    "operation": "nullif(operation, '')",
    "status": "nullif(status, '')",
}
COMBO_TABLE = "calls_rollup_combo"
COMBO_BOOKMARK_KEY = "rollup_combo_rowid"
#: The combination rollup's key after the day: who made the call, then the detail
#: rollup's columns (``NULL`` stored as ``''``, ``cached`` as text, as there).
COMBO_COLUMNS = ("user", "service", *DETAIL_COLUMNS)
COMBO_FILTERS = frozenset({"user", "service", *DETAIL_FILTERS})
COMBO_GROUPS = {
    **DETAIL_GROUPS,
    "user": "nullif(\"user\", '')",
    "service": "nullif(service, '')",
}
#: Calls rolled up into ``calls_rollup_combo`` per step while it catches up with a log
#: that had calls before it existed (about 0.2 s of the writer's time per step).
COMBO_STEP = 10_000
#: Readers use ``calls_rollup_combo`` while at most this many calls are past its bookmark
#: (they read those from ``calls``); further behind, they read ``calls`` as before.
COMBO_MAX_LAG = 20_000
#: The SQL function the combination rollup's upserts add histograms with.
HIST_FUNCTION = "httptrack_hist_add"
BUCKET_FUNCTION = "httptrack_latency_bucket"

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
    conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (key TEXT PRIMARY KEY, value)")
    measures = _MEASURE_COLUMNS
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (
        dim TEXT NOT NULL, value TEXT NOT NULL, day TEXT NOT NULL, {measures},
        PRIMARY KEY (dim, value, day)) WITHOUT ROWID""")
    # The histograms: how many calls of that day and value took about GAMMA**bucket ms.
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {LATENCY_TABLE} (
        dim TEXT NOT NULL, value TEXT NOT NULL, day TEXT NOT NULL,
        bucket INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (dim, value, day, bucket)) WITHOUT ROWID""")
    roll_up_new_rows(conn)


def create_detail_rollups(conn: sqlite3.Connection) -> None:
    """Create the detail rollup tables (migration m003) and roll up the rows already there."""
    measures = _MEASURE_COLUMNS
    key = ", ".join(f"{c} TEXT NOT NULL" for c in DETAIL_COLUMNS)
    names = ", ".join(DETAIL_COLUMNS)
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {DETAIL_TABLE} (
        day TEXT NOT NULL, {key}, {measures},
        PRIMARY KEY (day, {names})) WITHOUT ROWID""")
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {DETAIL_LATENCY_TABLE} (
        day TEXT NOT NULL, {key}, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (day, {names}, bucket)) WITHOUT ROWID""")
    roll_up_new_rows(conn)


def create_combo_rollup(conn: sqlite3.Connection) -> None:
    """Create ``calls_rollup_combo`` (migration m005) and roll up a first step of the calls
    already there (the writer does the rest, a step at a time)."""
    measures = _MEASURE_COLUMNS
    key = ", ".join(f'"{c}" TEXT NOT NULL' for c in COMBO_COLUMNS)
    rest = ", ".join(f'"{c}"' for c in COMBO_COLUMNS[1:])
    # The user first: one user's rows (the question asked most) are one range.
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {COMBO_TABLE} (
        day TEXT NOT NULL, {key}, {measures}, latency BLOB,
        PRIMARY KEY ("user", day, {rest})) WITHOUT ROWID""")
    roll_up_new_rows(conn, step=COMBO_STEP)


def combo_rollup_exists(conn: sqlite3.Connection) -> bool:
    return _all_exist(conn, COMBO_TABLE, STATE_TABLE)


def combo_bookmark(conn: sqlite3.Connection) -> int:
    return bookmark(conn, COMBO_BOOKMARK_KEY)


def combo_lag(conn: sqlite3.Connection) -> int:
    """How many calls (by rowid) are past ``calls_rollup_combo``'s bookmark."""
    (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()
    return max(0, int(top) - combo_bookmark(conn))


def encode_hist(hist: dict[int, int]) -> bytes | None:
    """A latency histogram as a blob: (bucket, n) pairs of 32-bit little-endian integers."""
    if not hist:
        return None
    pairs = array("i", [x for pair in hist.items() for x in pair])
    if _BIG_ENDIAN:
        pairs.byteswap()
    return pairs.tobytes()


def decode_hist(blob: bytes | None, into: dict[int, int]) -> None:
    """Add the histogram ``encode_hist`` made to ``into``."""
    if not blob:
        return
    pairs = array("i")
    pairs.frombytes(blob)
    if _BIG_ENDIAN:
        pairs.byteswap()
    get = into.get
    for bucket, n in zip(pairs[0::2], pairs[1::2], strict=True):
        into[bucket] = get(bucket, 0) + n


def _hist_add(a: bytes | None, b: bytes | None) -> bytes | None:
    if not a:
        return b
    if not b:
        return a
    hist: dict[int, int] = {}
    decode_hist(a, hist)
    decode_hist(b, hist)
    return encode_hist(hist)


def _bucket_or_none(ms: float | None) -> int | None:
    return None if ms is None else _bucket(ms)


def register_hist_function(conn: sqlite3.Connection) -> None:
    """The SQL functions the combination rollup is kept with (on the writer's connection)."""
    conn.create_function(HIST_FUNCTION, 2, _hist_add, deterministic=True)
    conn.create_function(BUCKET_FUNCTION, 1, _bucket_or_none, deterministic=True)


def detail_rollups_exist(conn: sqlite3.Connection) -> bool:
    return _all_exist(conn, ROLLUP_TABLE, LATENCY_TABLE, STATE_TABLE, DETAIL_TABLE, DETAIL_LATENCY_TABLE)


def rollups_exist(conn: sqlite3.Connection) -> bool:
    return _all_exist(conn, ROLLUP_TABLE, LATENCY_TABLE, STATE_TABLE)


def _all_exist(conn: sqlite3.Connection, *names: str) -> bool:
    marks = ", ".join("?" * len(names))
    found = conn.execute(f"SELECT count(DISTINCT name) FROM sqlite_master WHERE name IN ({marks})", names)
    return bool(found.fetchone()[0] == len(names))


def bookmark(conn: sqlite3.Connection, key: str = BOOKMARK_KEY) -> int:
    """The highest ``calls`` rowid rolled up (0: none)."""
    row = conn.execute(f"SELECT value FROM {STATE_TABLE} WHERE key = ?", [key]).fetchone()
    return int(row[0]) if row else 0


def detail_bookmark(conn: sqlite3.Connection) -> int:
    """The highest ``calls`` rowid in the detail rollup (its own: a writer of an earlier
    version keeps ``calls_rollup`` up to date and knows nothing of it)."""
    return bookmark(conn, DETAIL_BOOKMARK_KEY)


# -- maintenance (writers) ------------------------------------------------------------------

_DIM_NAMES = [d for d in DIMENSIONS if d]
_SELECT_CALLS = (
    "SELECT rowid, substr(started_at, 1, 10), "
    + ", ".join(DIMENSIONS[d] for d in _DIM_NAMES)
    + ", "
    + ", ".join(RAW_COLUMNS)
    + ", model, response_model"
    + " FROM calls WHERE "
)
_FIRST_RAW = 2 + len(_DIM_NAMES)
_LAST_RAW = _FIRST_RAW + len(RAW_COLUMNS)
#: Where the detail key's columns (``DETAIL_COLUMNS`` order) are in a ``_SELECT_CALLS`` row.
_DETAIL_AT = (
    2 + _DIM_NAMES.index("provider"),
    _LAST_RAW,  # model
    _LAST_RAW + 1,  # response_model
    2 + _DIM_NAMES.index("operation"),
    _FIRST_RAW + RAW_COLUMNS.index("status"),
    _FIRST_RAW + RAW_COLUMNS.index("cached"),
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
    first_raw = _FIRST_RAW
    top = 0
    days: dict[str, list[tuple[list[Any], int | None, Sequence[Any]]]] = {}
    for count, row in enumerate(rows):
        if pause is not None and not count % 64:
            pause()
        if row[0] > top:
            top = row[0]
        vector, bucket = contribution(row[first_raw:_LAST_RAW])
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


def _accumulate_detail(
    rows: Iterable[Sequence[Any]], pause: Callable[[], None] | None = None
) -> dict[tuple[str, ...], Totals]:
    """(day, *DETAIL_COLUMNS) -> Totals for these ``_SELECT_CALLS`` rows."""
    groups: dict[tuple[str, ...], Totals] = {}
    at = _DETAIL_AT
    for count, row in enumerate(rows):
        if pause is not None and not count % 64:
            pause()
        key = (row[1], *("" if row[i] is None else str(row[i]) for i in at))
        totals = groups.get(key)
        if totals is None:
            totals = groups[key] = Totals()
        totals.add(*contribution(row[_FIRST_RAW:_LAST_RAW]))
    return groups


def _additions(table: str) -> str:
    """The ``SET`` clauses of an upsert adding the measures to ``table``'s row."""

    def plus(m: str) -> str:  # NULL + NULL stays NULL ("not reported"), NULL + x is x
        return (
            f"{m} = CASE WHEN excluded.{m} IS NULL THEN {table}.{m} "
            f"ELSE coalesce({table}.{m}, 0) + excluded.{m} END"
        )

    return ", ".join(plus(m) for m in MEASURE_NAMES)


def _upsert_sql(table: str, latency_table: str, key: Sequence[str]) -> tuple[str, str]:
    keys = ", ".join(key)
    columns = ", ".join((*key, *MEASURE_NAMES))
    marks = ", ".join("?" * (len(key) + len(MEASURE_NAMES)))
    measures = (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({keys}) "
        f"DO UPDATE SET {_additions(table)}"
    )
    latency = (
        f"INSERT INTO {latency_table} ({keys}, bucket, n) VALUES ({', '.join('?' * (len(key) + 2))}) "
        f"ON CONFLICT ({keys}, bucket) DO UPDATE SET n = n + excluded.n"
    )
    return measures, latency


_UPSERTS = _upsert_sql(ROLLUP_TABLE, LATENCY_TABLE, ("dim", "value", "day"))
_DETAIL_UPSERTS = _upsert_sql(DETAIL_TABLE, DETAIL_LATENCY_TABLE, ("day", *DETAIL_COLUMNS))


def _combo_upsert_sql() -> str:
    keys = ", ".join(f'"{c}"' for c in ("day", *COMBO_COLUMNS))
    marks = ", ".join("?" * (1 + len(COMBO_COLUMNS) + len(MEASURE_NAMES) + 1))
    return (
        f"INSERT INTO {COMBO_TABLE} ({keys}, {', '.join(MEASURE_NAMES)}, latency) VALUES ({marks}) "
        f"ON CONFLICT ({keys}) DO UPDATE SET {_additions(COMBO_TABLE)}, "
        f"latency = {HIST_FUNCTION}({COMBO_TABLE}.latency, excluded.latency)"
    )


_COMBO_UPSERT = _combo_upsert_sql()


def _combo_select() -> str:
    """The combination rollup's groups of the calls matching a condition (appended), summed
    by SQLite: the same sums as ``contribution`` makes, and each group's latency buckets."""
    key = ", ".join(f"coalesce(CAST(\"{c}\" AS TEXT), '')" for c in COMBO_COLUMNS)
    timed = "latency_ms IS NOT NULL AND NOT coalesce(cached, 0)"
    sums = [
        "count(*)",
        "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END)",
        "sum(CASE WHEN cached THEN 1 ELSE 0 END)",
        "sum(input_tokens)",
        "sum(output_tokens)",
        "sum(total_tokens)",
        "sum(cached_input_tokens)",
        "sum(cost_usd)",
        "sum(cost_saved_usd)",
        "sum(CASE WHEN cost_usd IS NULL AND status = 'success' THEN 1 ELSE 0 END)",
        f"sum(CASE WHEN {timed} THEN latency_ms END)",
        f"sum(CASE WHEN {timed} THEN 1 ELSE 0 END)",
    ]
    assert len(sums) == len(MEASURE_NAMES)
    return (
        f"SELECT substr(started_at, 1, 10), {key}, {', '.join(sums)}, "
        f"group_concat({BUCKET_FUNCTION}(latency_ms)) FILTER (WHERE {timed}) "
        f"FROM calls WHERE {{where}} GROUP BY {', '.join(str(i) for i in range(1, len(COMBO_COLUMNS) + 2))}"
    )


_COMBO_SELECT = _combo_select()


def _merge_combo(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> None:
    """Add the calls matching ``where`` to ``calls_rollup_combo``. (Grouped by SQLite, not
    in Python as the other rollups: its groups are many and small.)"""
    register_hist_function(conn)
    upserts = []
    for row in conn.execute(_COMBO_SELECT.format(where=where), params):
        buckets = row[-1]
        hist: dict[int, int] = {}
        if buckets:
            for bucket in map(int, buckets.split(",")):
                hist[bucket] = hist.get(bucket, 0) + 1
        upserts.append((*row[:-1], encode_hist(hist)))
    conn.executemany(_COMBO_UPSERT, upserts)


def _merge_into(
    conn: sqlite3.Connection, groups: dict[Any, Totals], upserts: tuple[str, str] = _UPSERTS
) -> None:
    # Additions done by SQLite in two executemany calls: no read-modify-write in Python.
    measures, latency = upserts
    conn.executemany(measures, [[*key, *t.values] for key, t in groups.items()])
    conn.executemany(latency, [[*key, b, n] for key, t in groups.items() for b, n in t.hist.items()])


def _set_bookmark(conn: sqlite3.Connection, rowid: int, key: str = BOOKMARK_KEY) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {STATE_TABLE} (key, value) VALUES (?, ?)", [key, rowid])


def roll_up_new_rows(
    conn: sqlite3.Connection,
    pause: Callable[[], None] | None = None,
    *,
    step: int | None = None,
    through: int = 0,
) -> int:
    """Add the calls past each bookmark to the rollups (the writer calls this in a write
    transaction). Returns how many calls were new to ``calls_rollup``. ``pause`` is called
    now and then (the writer lets the app's threads have the GIL).

    ``step``: ``calls_rollup_combo``, when it lags behind the other rollups (a log that had
    calls before it existed), takes at most this many calls now (oldest first), and at
    least those up to rowid ``through`` (calls about to be deleted); ``None``: all."""
    main = bookmark(conn)
    detail = detail_bookmark(conn) if detail_rollups_exist(conn) else None
    combo = combo_bookmark(conn) if combo_rollup_exists(conn) else None
    start = main if detail is None else min(main, detail)
    lagging = combo is not None and step is not None and combo < start
    if combo is not None and not lagging:
        start = min(start, combo)
    cursor = conn.execute(_SELECT_CALLS + "rowid > ? ORDER BY rowid", [start])
    total = 0
    while True:
        rows = cursor.fetchmany(100_000)
        if not rows:
            break
        top = rows[-1][0]
        fresh = rows if main == start else [r for r in rows if r[0] > main]
        if fresh:
            groups, _ = _accumulate(fresh, pause)
            _merge_into(conn, groups)
            total += len(fresh)
        _set_bookmark(conn, max(top, main))
        if detail is not None:
            fresh = rows if detail == start else [r for r in rows if r[0] > detail]
            _merge_into(conn, _accumulate_detail(fresh, pause), _DETAIL_UPSERTS)
            _set_bookmark(conn, max(top, detail), DETAIL_BOOKMARK_KEY)
        if combo is not None and not lagging:
            if top > combo:
                _merge_combo(conn, "rowid > ? AND rowid <= ?", [max(combo, start), top])
            _set_bookmark(conn, max(top, combo), COMBO_BOOKMARK_KEY)
            combo = max(top, combo)
    if lagging:
        assert combo is not None and step is not None
        _catch_up_combo(conn, combo, step, through, pause)
    return total


def _catch_up_combo(
    conn: sqlite3.Connection, mark: int, step: int, through: int, pause: Callable[[], None] | None
) -> None:
    """Roll the ``step`` calls after rowid ``mark`` (and any up to ``through``) into
    ``calls_rollup_combo``."""
    while True:
        if pause is not None:
            pause()
        last = conn.execute(
            "SELECT max(rowid), count(*) FROM "
            "(SELECT rowid FROM calls WHERE rowid > ? ORDER BY rowid LIMIT ?)",
            [mark, step],
        )
        (top, n) = last.fetchone()
        if not n:
            return
        _merge_combo(conn, "rowid > ? AND rowid <= ?", [mark, top])
        mark = top
        _set_bookmark(conn, mark, COMBO_BOOKMARK_KEY)
        if mark >= through or n < step:
            return


def recompute_days(conn: sqlite3.Connection, first_day: str | None, last_day: str) -> None:
    """Roll up the days from ``first_day`` (``None``: the beginning) to ``last_day``
    (inclusive) again from ``calls``, after rows of those days were deleted."""
    span = "day <= ?" + (" AND day >= ?" if first_day else "")
    span_params = [last_day] + ([first_day] if first_day else [])
    detail = detail_rollups_exist(conn)
    combo = combo_rollup_exists(conn)
    tables = (ROLLUP_TABLE, LATENCY_TABLE) + ((DETAIL_TABLE, DETAIL_LATENCY_TABLE) if detail else ())
    tables += (COMBO_TABLE,) if combo else ()
    for table in tables:
        conn.execute(f"DELETE FROM {table} WHERE {span}", span_params)
    where = "rowid <= ? AND started_at < ?" + (" AND started_at >= ?" if first_day else "")
    main = bookmark(conn)
    top = max(main, detail_bookmark(conn) if detail else 0, combo_bookmark(conn) if combo else 0)
    params = [top, next_day(last_day)] + ([first_day] if first_day else [])
    rows = conn.execute(_SELECT_CALLS + where, params).fetchall()
    groups, _ = _accumulate([r for r in rows if r[0] <= main])
    _merge_into(conn, groups)
    if detail:
        upto = detail_bookmark(conn)
        _merge_into(conn, _accumulate_detail([r for r in rows if r[0] <= upto]), _DETAIL_UPSERTS)
    if combo:
        _merge_combo(conn, where, [combo_bookmark(conn), *params[1:]])


def rebuild_rollups(conn: sqlite3.Connection, from_day: str | None = None) -> None:
    """Roll everything up again from ``calls`` (after the table was edited by hand).
    ``from_day``: keep the days before it as they are (their calls were pruned); every
    call must have started on or after it."""
    detail = detail_rollups_exist(conn)
    combo = combo_rollup_exists(conn)
    span, params = ("WHERE day >= ?", [from_day]) if from_day else ("", [])
    tables = (ROLLUP_TABLE, LATENCY_TABLE) + ((DETAIL_TABLE, DETAIL_LATENCY_TABLE) if detail else ())
    for table in tables + ((COMBO_TABLE,) if combo else ()):
        conn.execute(f"DELETE FROM {table} {span}", params)
    _set_bookmark(conn, 0)
    if detail:
        _set_bookmark(conn, 0, DETAIL_BOOKMARK_KEY)
    if combo:
        _set_bookmark(conn, 0, COMBO_BOOKMARK_KEY)
    roll_up_new_rows(conn)


def next_day(day: str) -> str:
    """``2026-01-31`` → ``2026-02-01``."""
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
