"""Reading the call log from Python: ``httptrack.open_log()``. The CLI is built on this.

```python
log = httptrack.open_log()                      # HTTPTRACK_DB or the default path
for call in log.calls(since="1d", user="alice"):
    print(call.model, call.total_tokens, call.cost_usd)
log.stats(by="model")                           # totals per model, as dicts
log.totals(since="7d")["cost_usd"]
```

The database is opened read-only and never written, so reading never blocks the app's
writer and never takes a write lock; a file that is not a call log is refused (``LogError``),
never given httptrack's tables. Every query here is answered from an index (see ``_views``), so it
stays fast on millions of calls.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, cast

from .._errors import LogError
from .._settings import Settings
from .._time import parse_when
from ..record._recover import recover_log
from . import _rollup
from ._bodies import BODY_FUNCTION, COMPRESSED_COLUMNS, register_functions
from ._rollup import Totals
from ._schema import CALL_LOG_COLUMNS
from ._sqlite import connect
from ._url import DatabaseURL, log_target
from ._views import FTS_TABLE

if TYPE_CHECKING:
    from ._records import CallRecord

__all__ = ["JSON_COLUMNS", "STATS_GROUPS", "STAT_FIELDS", "Filters", "Log", "open_log", "parse_when"]

#: ``stats(by=...)`` groupings and the SQL expression each groups on: the rollup's
#: dimensions, the model asked for (``model`` is the one that answered; a failed call has
#: none, so its error counts against the model asked for only), and the day.
STATS_GROUPS = {
    **{name: sql for name, sql in _rollup.DIMENSIONS.items() if name},
    "requested_model": "nullif(model, '')",
    "day": "substr(started_at, 1, 10)",
}
#: What each ``stats()`` row holds (after the group's own key, if any).
STAT_FIELDS = (
    "calls",
    "errors",
    "error_rate",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cost_usd",
    "cost_saved_usd",
    "unpriced",
    "avg_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
)
#: Columns that hold JSON text; ``rows(decode_json=True)`` returns them decoded.
JSON_COLUMNS = ("properties", "request_headers", "response_headers")

_EQUALITY_FILTERS = ("provider", "user", "service", "session", "status", "operation")
#: How long a search may walk the calls in time order before the other plan is tried.
PROBE_SECONDS = 0.15
#: SQLite's largest integer: a bigger ``limit`` means no limit.
_MAX_LIMIT = 2**63 - 1


class Filters(TypedDict, total=False):
    """Which calls to read. Every filter is optional; they combine with AND. A list for a
    text filter matches any of its values."""

    since: str | datetime
    """Calls that started at or after this: ``2h``, ``7d``, ``30m``, ``1w`` ago, an ISO date
    (``2026-01-31``) or datetime, or a ``datetime`` (naive means UTC)."""
    until: str | datetime
    """Calls that started before this (same forms as ``since``)."""
    provider: str | Sequence[str]
    model: str | Sequence[str]
    """The model asked for or the model that answered."""
    user: str | Sequence[str]
    service: str | Sequence[str]
    session: str | Sequence[str]
    status: str | Sequence[str]
    """``success`` or ``error``."""
    operation: str | Sequence[str]
    """``chat``, ``completion``, ``embeddings``, ``models`` or ``other``."""
    cached: bool
    """Only calls served from httptrack's cache (``True``) or only real ones (``False``)."""
    query: str
    """Full-text search over prompts and generated text: every word must occur (words are
    matched whole, case and accents ignored; ``"a phrase"`` in quotes, ``pref*`` for a prefix)."""


def fts_query(text: str) -> str:
    """A user's search words → an FTS5 query that cannot be a syntax error: each word (or
    ``"quoted phrase"``) must occur; a trailing ``*`` keeps prefix matching."""
    terms = []
    for phrase, word in re.findall(r'"([^"]*)"|(\S+)', text):
        term = phrase or word
        prefix = not phrase and term.endswith("*") and len(term) > 1
        term = term.rstrip("*") if prefix else term
        if term:
            terms.append('"' + term.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


class Log:
    """A call log database, opened for reading. Use ``httptrack.open_log()``."""

    def __init__(
        self, path: str | Path | DatabaseURL, *, connection: sqlite3.Connection | None = None
    ) -> None:
        self.path: Path | DatabaseURL = path if isinstance(path, DatabaseURL) else Path(path)
        if isinstance(self.path, DatabaseURL):
            # A Postgres log: the same queries, through a connection that speaks SQLite's
            # dialect to Log and Postgres's to the server (_pgreader).
            from ._pgreader import open_reader

            # (It answers every call Log makes of an sqlite3.Connection.)
            connection = cast(sqlite3.Connection, open_reader(self.path))
            self._owned = True
        elif connection is None:
            if not self.path.exists():
                raise FileNotFoundError(f"no httptrack database at {self.path}")
            connection = _open_readonly(self.path)
            self._owned = True
        else:
            self._owned = False  # someone else's (datasette's): used as it is, never closed here
        self._conn = connection
        try:
            self._columns = _call_log_columns(connection, self.path)
        except BaseException:
            self.close()
            raise
        if isinstance(connection, sqlite3.Connection):
            register_functions(connection)  # long bodies are stored compressed: read as text
            # Every column, in table order, the compressed ones through httptrack_body().
            ordered = [row[1] for row in connection.execute("PRAGMA table_info(calls)")]
            self._select_all = ", ".join(
                f'{BODY_FUNCTION}(calls."{c}") AS "{c}"' if c in COMPRESSED_COLUMNS else f'calls."{c}"'
                for c in ordered
            )
        else:  # a Postgres log (log/_pgreader): bodies are text there (TOAST compresses them)
            self._select_all = "calls.*"
        self._searchable = (
            self._execute("SELECT 1 FROM sqlite_master WHERE name = ?", [FTS_TABLE]).fetchone() is not None
        )
        self._rolled_up = _rollup.rollups_exist(self._conn)
        self._detailed = _rollup.detail_rollups_exist(self._conn)
        self._combined = isinstance(connection, sqlite3.Connection) and _rollup.combo_rollup_exists(
            connection
        )

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        cursor = self._conn.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, params)

    def close(self) -> None:
        if self._owned:
            self._conn.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<httptrack.Log {str(self.path)!r}>"

    # -- filters --------------------------------------------------------------------------

    def _where(
        self, filters: Filters, *, in_time_order: bool = False, probe: bool = False
    ) -> tuple[str, list[Any]]:
        """SQL conditions for ``filters``, and their parameters. ``in_time_order``: for a
        listing that walks an index in time order and stops at its limit (see ``rows``);
        ``probe``: the search as a lookup in the search index for each row walked."""
        unknown = set(filters) - set(Filters.__annotations__)
        if unknown:
            raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        clauses: list[str] = []
        params: list[Any] = []
        if filters.get("since") is not None:
            clauses.append("started_at >= ?")
            params.append(parse_when(filters["since"]))
        if filters.get("until") is not None:
            clauses.append("started_at < ?")
            params.append(parse_when(filters["until"]))
        for column in _EQUALITY_FILTERS:
            values = _values(filters.get(column))  # type: ignore[arg-type]
            if values:
                clauses.append(f'"{column}" IN ({", ".join("?" * len(values))})')
                params.extend(values)
        models = _values(filters.get("model"))
        if models:
            marks = ", ".join("?" * len(models))
            clauses.append(f"(model IN ({marks}) OR response_model IN ({marks}))")
            params.extend([*models, *models])
        if filters.get("cached") is not None:
            clauses.append("cached = ?")
            params.append(int(bool(filters["cached"])))
        query = (filters.get("query") or "").strip()
        if query:
            if self._searchable and probe:
                clauses.append(
                    f"EXISTS (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? "
                    f"AND {FTS_TABLE}.rowid = calls.rowid)"
                )
                params.append(fts_query(query))
            elif self._searchable:
                # `+rowid`: not a lookup key for the matches (which SQLite would then fetch
                # and sort, all 800,000 of a common word: seconds), only a test of each row
                # against them, while an index of the other filters is walked in time order.
                rowid = "+rowid" if in_time_order else "rowid"
                clauses.append(f"{rowid} IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?)")
                params.append(fts_query(query))
            else:  # an SQLite without FTS5: slower, substring semantics
                clauses.append(f"({BODY_FUNCTION}(request_body) LIKE ? OR response_text LIKE ?)")
                params.extend([f"%{query}%"] * 2)
        return (" AND ".join(clauses) or "1"), params

    # -- reading calls ----------------------------------------------------------------------

    def rows(
        self,
        *,
        limit: int | None = None,
        newest_first: bool = True,
        columns: Sequence[str] | None = None,
        decode_json: bool = False,
        **filters: Unpack[Filters],
    ) -> Iterator[dict[str, Any]]:
        """Matching calls as plain dicts (column → value), read lazily: constant memory
        however many there are. ``columns`` picks and orders the columns (default: all)."""
        if columns is not None:
            from ._schema import COLUMN_NAMES

            bad = [c for c in columns if c not in COLUMN_NAMES]
            if bad:
                raise ValueError(f"no such column: {', '.join(bad)}")
            # A log of an earlier schema (read as it is) may lack a newer column: NULL there.
            select = ", ".join(
                (f'{BODY_FUNCTION}(calls."{c}") AS "{c}"' if c in COMPRESSED_COLUMNS else f'calls."{c}"')
                if c in self._columns
                else f'NULL AS "{c}"'
                for c in columns
            )
        else:
            select = self._select_all
        order = "DESC" if newest_first else "ASC"
        # Newest (or oldest) first by start time, searched or not: the search index's order
        # is the order calls were written in, i.e. finished in (a long stream comes last).
        # A limited search that the walk in time order (``_probed``) did not answer quickly
        # has few matches: they are looked up and sorted (``rowid IN``), not tested against
        # every call the walk would pass.
        where, params = self._where(filters, in_time_order=not limit)
        sql = f"SELECT {select} FROM calls WHERE {where} ORDER BY started_at {order}, id {order}"
        if limit:
            sql += f" LIMIT {min(int(limit), _MAX_LIMIT)}"
            found = self._probed(select, order, limit, filters)
            if found is not None:
                yield from (self._decoded(dict(row), decode_json) for row in found)
                return
        # Plain tuples zipped with the names: a third faster than dicts of sqlite3.Row.
        cursor = self._conn.execute(sql, params)
        # A Postgres reader's cursor (log/_pgreader) has no description: its rows name their
        # columns themselves.
        description = getattr(cursor, "description", None)
        names: list[str] | None = [d[0] for d in description] if description else None
        decoded = [n for n in JSON_COLUMNS if names is None or n in names] if decode_json else []
        try:
            while True:
                batch = cursor.fetchmany(500)
                if not batch:
                    return
                for row in batch:
                    data = dict(zip(names or row.keys(), row, strict=True))
                    for key in decoded:
                        value = data.get(key)
                        if value.__class__ is str:
                            data[key] = _loads(value)
                    yield data
        finally:
            # Left unfinished (a reader's pipe closed, say), the generator may be closed only
            # after the log: its cursor then went with the connection.
            with contextlib.suppress(sqlite3.ProgrammingError):
                cursor.close()

    @staticmethod
    def _decoded(data: dict[str, Any], decode_json: bool) -> dict[str, Any]:
        if decode_json:
            for key in JSON_COLUMNS:
                if isinstance(data.get(key), str):
                    data[key] = _loads(data[key])
        return data

    def _probed(self, select: str, order: str, limit: int, filters: Filters) -> list[sqlite3.Row] | None:
        """The first ``limit`` searched calls, found by walking the calls in time order and
        looking each up in the search index, if that takes at most ``PROBE_SECONDS``: a
        common word is in most calls, so a page of them is found in a few lookups, where
        the other plan (``+rowid IN``) gathers every match first (all of them: seconds on
        millions of calls). A rare word or phrase makes the walk long: then ``None``, and
        the other plan, quick for few matches, runs. (Only on a connection of this Log's
        own: a progress handler on someone else's would replace theirs.)"""
        if (
            not (filters.get("query") or "").strip()
            or not self._searchable
            or not self._owned
            or not isinstance(self._conn, sqlite3.Connection)  # a Postgres log: its own search
        ):
            return None
        where, params = self._where(filters, in_time_order=True, probe=True)
        sql = (
            f"SELECT {select} FROM calls WHERE {where} ORDER BY started_at {order}, id {order} "
            f"LIMIT {min(int(limit), _MAX_LIMIT)}"
        )
        deadline = time.monotonic() + PROBE_SECONDS
        self._conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        try:
            return self._execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            return None
        finally:
            self._conn.set_progress_handler(None, 0)

    def calls(
        self, *, limit: int | None = None, newest_first: bool = True, **filters: Unpack[Filters]
    ) -> Iterator[CallRecord]:
        """Matching calls as ``CallRecord`` objects, newest first (see ``Filters`` for the
        filters: ``since``, ``until``, ``provider``, ``model``, ``user``, ``service``,
        ``session``, ``status``, ``operation``, ``cached``, ``query``)."""
        from ._records import CallRecord

        for row in self.rows(limit=limit, newest_first=newest_first, **filters):
            yield CallRecord.from_row(row)

    def count(self, **filters: Unpack[Filters]) -> int:
        """How many calls match."""
        where, params = self._where(filters)
        (n,) = self._execute(f"SELECT count(*) FROM calls WHERE {where}", params).fetchone()
        return int(n)

    def get(self, call_id: str) -> CallRecord | None:
        """One call by id, or by a unique prefix of its id (at least 4 characters)."""
        from ._records import CallRecord

        call_id = call_id.strip().upper()
        select = self._select_all
        row = self._execute(f"SELECT {select} FROM calls WHERE id = ?", [call_id]).fetchone()
        if row is None and len(call_id) >= 4:
            # Ids are upper-case Crockford base32: a prefix range uses the primary key.
            rows = self._execute(
                f"SELECT {select} FROM calls WHERE id >= ? AND id < ? LIMIT 2", [call_id, call_id + "\x7f"]
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return None if row is None else CallRecord.from_row(dict(row))

    # -- figures ------------------------------------------------------------------------------

    def stats(
        self, *, by: str | None = None, percentiles: bool = True, **filters: Unpack[Filters]
    ) -> list[dict[str, Any]]:
        """Totals of the matching calls (one row), or per ``by`` group: ``provider``,
        ``model`` (the model that answered, else the one asked for), ``requested_model``
        (the one asked for), ``user``, ``service``, ``operation``, ``status`` or ``day``
        (UTC). Groups come most expensive first (days newest first).

        Each row holds ``STAT_FIELDS``: calls, errors, error_rate, cache_hits (calls served
        by httptrack's cache), tokens, cost_usd, cost_saved_usd (what the cache hits would
        have cost), unpriced (successful calls with no known price), and latency over the
        calls that reached the provider: average, p50 and p95 (estimated within 1%).
        Answered from the daily rollups where the question allows (see ``_rollup``).
        ``percentiles=False`` skips p50/p95 (``None``), which is quicker for many groups.
        """
        return _rows(by, self._collect(by, percentiles, filters))

    def stats_and_totals(
        self, *, by: str, **filters: Unpack[Filters]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``totals(**filters)`` and ``stats(by=by, **filters)`` at once. Where the rollups
        cannot answer (a search, a session), the calls are read once for both, not twice:
        the totals are the groups' sums."""
        filters = self._fixed(filters)
        if self._rollup_plan(None, filters) is not None:  # the totals cost a few rollup rows
            return self.totals(**filters), self.stats(by=by, **filters)
        groups = self._collect(by, True, filters)
        total = _rollup.Totals()
        for part in groups.values():
            total.add(part.values)
            for bucket, n in part.hist.items():
                total.hist[bucket] = total.hist.get(bucket, 0) + n
        return _rows(None, {None: total})[0], _rows(by, groups)

    def _fixed(self, filters: Filters) -> Filters:
        """``filters`` with ``since``/``until`` as moments: "7d" means the same moment in
        every query that follows."""
        fixed: dict[str, Any] = dict(filters)
        for key in ("since", "until"):
            if fixed.get(key) is not None:
                fixed[key] = parse_when(fixed[key])
        return fixed  # type: ignore[return-value]

    def _collect(self, by: str | None, percentiles: bool, filters: Filters) -> dict[Any, Totals]:
        """Each group's sums and latency histogram (``by`` None: one group, the totals)."""
        if by is not None and by not in STATS_GROUPS:
            raise ValueError(f"cannot group by {by!r} (choose from {', '.join(STATS_GROUPS)})")
        filters = self._fixed(filters)
        where, params = self._where(filters)
        groups: dict[Any, Totals] = {}
        plan = self._rollup_plan(by, filters)
        if plan is None:
            self._add_calls(groups, by, where, params)
        else:
            self._add_rollup(groups, plan, percentiles)
            full_start, full_end = plan.full_start, plan.full_end
            # What the rollup does not hold: the partial days at the edges of the range,
            # and calls past its bookmark (not rolled up yet, or written by something that
            # does not roll up).
            since = parse_when(filters["since"]) if filters.get("since") is not None else None
            until = parse_when(filters["until"]) if filters.get("until") is not None else None
            if since is not None and full_start is not None and since < full_start:
                self._add_calls(groups, by, f"{where} AND started_at < ?", [*params, full_start])
            if until is not None and full_end is not None and full_end < until:
                self._add_calls(groups, by, f"{where} AND started_at >= ?", [*params, full_end])
            span = "".join(
                [" AND started_at >= ?" if full_start else "", " AND started_at < ?" if full_end else ""]
            )
            bounds = [b for b in (full_start, full_end) if b]
            # NOT INDEXED: by rowid from the bookmark (a few calls), never an index of
            # `started_at` over the whole range (every call of the last 90 days).
            self._add_calls(
                groups, by, f"rowid > ? AND {where}{span}", [plan.bookmark, *params, *bounds], past=True
            )
        if not percentiles:
            for totals in groups.values():
                totals.hist.clear()  # the calls' own buckets too: all or nothing
        return groups

    def totals(self, **filters: Unpack[Filters]) -> dict[str, Any]:
        """``stats()`` of the matching calls as one dict."""
        return self.stats(**filters)[0]

    def _rollup_plan(self, by: str | None, filters: Filters) -> _RollupPlan | None:
        """How the rollups can answer, or ``None`` (then ``calls`` does). ``calls_rollup``
        can when at most one dimension is involved (grouped by, or filtered on); the detail
        rollup when every one involved is among provider, model, operation, status and
        cached (``stats --provider openai --by model``, ``stats --cached``)."""
        if not self._rolled_up:
            return None
        dims = {k for k, v in filters.items() if v not in (None, "", []) and k not in ("since", "until")}
        group_dim = by if by not in (None, "day") else None
        involved = dims | ({group_dim} if group_dim else set())
        full_start = full_end = None
        if filters.get("since") is not None:
            since = parse_when(filters["since"])
            day = since[:10]
            full_start = day if since.endswith("T00:00:00.000Z") else _rollup.next_day(day)
        if filters.get("until") is not None:
            full_end = parse_when(filters["until"])[:10]
        clauses: list[str] = []
        params: list[Any] = []
        # A model filter also matches the model asked for: calls_rollup has only the answering one.
        if len(involved) <= 1 and not involved - set(_rollup.DIMENSIONS) and "model" not in dims:
            dim = next(iter(involved), "")
            clauses.append("dim = ?")
            params.append(dim)
            if dim in dims:
                values = _values(filters.get(dim))  # type: ignore[arg-type]
                clauses.append(f"value IN ({', '.join('?' * len(values))})")
                params.extend(values)
            key_sql = {"day": "day", None: "NULL"}.get(by, _VALUE_KEY)
            tables = (_rollup.ROLLUP_TABLE, _rollup.LATENCY_TABLE)
            bookmark = _rollup.bookmark(self._conn)
        elif (
            self._detailed
            and dims <= _rollup.DETAIL_FILTERS
            and (group_dim is None or group_dim in _rollup.DETAIL_GROUPS)
        ):
            self._detail_clauses(dims, filters, clauses, params)
            key_sql = {"day": "day", None: "NULL"}.get(by) or _rollup.DETAIL_GROUPS[by]  # type: ignore[index]
            tables = (_rollup.DETAIL_TABLE, _rollup.DETAIL_LATENCY_TABLE)
            bookmark = _rollup.detail_bookmark(self._conn)
        elif (
            self._combined
            and dims <= _rollup.COMBO_FILTERS
            and (group_dim is None or group_dim in _rollup.COMBO_GROUPS)
            and _rollup.combo_lag(self._conn) <= _rollup.COMBO_MAX_LAG
        ):
            self._detail_clauses(dims, filters, clauses, params)
            key_sql = {"day": "day", None: "NULL"}.get(by) or _rollup.COMBO_GROUPS[by]  # type: ignore[index]
            tables = (_rollup.COMBO_TABLE, "")  # the histograms are in its rows
            bookmark = _rollup.combo_bookmark(self._conn)
        else:
            return None
        if full_start:
            clauses.append("day >= ?")
            params.append(full_start)
        if full_end:
            clauses.append("day < ?")
            params.append(full_end)
        return _RollupPlan(
            tables, " AND ".join(clauses) or "1", params, key_sql, full_start, full_end, bookmark
        )

    @staticmethod
    def _detail_clauses(dims: set[str], filters: Filters, clauses: list[str], params: list[Any]) -> None:
        """The filters ``dims`` over the detail (or combination) rollup's columns."""
        for dim in sorted(dims):
            if dim == "cached":
                clauses.append("cached = ?")
                params.append(str(int(bool(filters["cached"]))))
                continue
            values = _values(filters.get(dim))  # type: ignore[arg-type]
            marks = ", ".join("?" * len(values))
            if dim == "model":  # as _where: asked for, or answered by
                clauses.append(f"(model IN ({marks}) OR response_model IN ({marks}))")
                params.extend([*values, *values])
            else:
                clauses.append(f'"{dim}" IN ({marks})')
                params.extend(values)

    def _add_rollup(self, groups: dict[Any, Totals], plan: _RollupPlan, percentiles: bool = True) -> None:
        sums = ", ".join(f"sum({m})" for m in _rollup.MEASURE_NAMES)
        table, latency_table = plan.tables

        def totals_for(key: Any) -> Totals:
            totals = groups.get(key)
            if totals is None:
                totals = groups[key] = Totals()
            return totals

        sql = f"SELECT {plan.key_sql} AS k, {sums} FROM {table} WHERE {plan.where} GROUP BY k"
        keys = []
        for row in self._conn.execute(sql, plan.params):
            totals_for(row[0]).add(row[1:])
            keys.append(row[0])
        if not percentiles:
            return
        if not latency_table:  # calls_rollup_combo: a histogram in each row
            sql = f"SELECT {plan.key_sql} AS k, latency FROM {table} WHERE {plan.where}"
            parts: dict[Any, list[bytes]] = {}
            for key, blob in self._conn.execute(sql + " AND latency IS NOT NULL", plan.params):
                blobs = parts.get(key)
                if blobs is None:
                    blobs = parts[key] = []
                blobs.append(blob)
            for key, blobs in parts.items():  # one decoding per group: (bucket, n) pairs laid end to end
                _rollup.decode_hist(b"".join(blobs), totals_for(key).hist)
            return
        if plan.key_sql == _VALUE_KEY and isinstance(self._conn, sqlite3.Connection):
            # Per value of the dimension (`--by user`): one histogram per value, each read
            # from its own range of the primary key (dim, value, day, bucket) and summed over
            # the days by a sort of its few thousand rows. One GROUP BY value, bucket over
            # them all sorted every row of the dimension (1.5M for 300 users, 5M calls):
            # 2.6x the time.
            sql = (
                f"SELECT bucket, sum(n) FROM {latency_table} WHERE {plan.where} AND value = ? GROUP BY bucket"
            )
            for key in keys:
                hist = totals_for(key).hist
                for bucket, n in self._conn.execute(sql, [*plan.params, "" if key is None else key]):
                    hist[bucket] = hist.get(bucket, 0) + n
            return
        sql = (
            f"SELECT {plan.key_sql} AS k, bucket, sum(n) FROM {latency_table} "
            f"WHERE {plan.where} GROUP BY k, bucket"
        )
        for key, bucket, n in self._conn.execute(sql, plan.params):
            hist = totals_for(key).hist
            hist[bucket] = hist.get(bucket, 0) + n

    def _add_calls(
        self, groups: dict[Any, Totals], by: str | None, where: str, params: list[Any], *, past: bool = False
    ) -> None:
        key_sql = STATS_GROUPS[by] if by else "NULL"
        table = "calls NOT INDEXED" if past and isinstance(self._conn, sqlite3.Connection) else "calls"
        sql = f"SELECT {key_sql}, {', '.join(_rollup.RAW_COLUMNS)} FROM {table} WHERE {where}"
        cursor = self._conn.execute(sql, params)
        while True:
            batch = cursor.fetchmany(10_000)
            if not batch:
                break
            for row in batch:
                totals = groups.get(row[0])
                if totals is None:
                    totals = groups[row[0]] = Totals()
                totals.add_call(row[1:])

    def status(self) -> dict[str, Any]:
        """What is in the database: path, size on disk, calls, oldest and newest call,
        schema version, whether full-text search is available."""
        size = sum(
            Path(f"{self.path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{self.path}{s}").exists()
        )
        calls = self._execute("SELECT count(*) FROM calls").fetchone()[0]
        oldest = self._execute("SELECT min(started_at) FROM calls").fetchone()[0]
        newest = self._execute("SELECT max(started_at) FROM calls").fetchone()[0]
        (version,) = self._execute("PRAGMA user_version").fetchone()
        return {
            "path": str(self.path),
            "size_bytes": size,
            "calls": calls,
            "oldest": oldest,
            "newest": newest,
            "schema_version": version,
            "search_index": self._searchable,
        }


#: A main rollup plan's group key when grouped by a dimension's value.
_VALUE_KEY = "nullif(value, '')"


@dataclass(frozen=True)
class _RollupPlan:
    """Which rollup tables answer a ``stats`` question, and how."""

    tables: tuple[str, str]
    """The sums, and the latency histograms."""
    where: str
    params: list[Any]
    key_sql: str
    """The group's key, over the rollup's columns."""
    full_start: str | None
    """The first whole day of the range (``since``'s next midnight), if it has a start."""
    full_end: str | None
    """The end of the last whole day (``until``'s midnight), if it has an end."""
    bookmark: int
    """The rollup holds the calls up to this rowid."""


def _rows(by: str | None, groups: dict[Any, Totals]) -> list[dict[str, Any]]:
    """``stats()``'s rows from the groups' sums, in its order."""
    if by is None and not groups:
        groups = {None: Totals()}
    rows = [_finish(by, key, totals) for key, totals in groups.items()]
    if by == "day":
        rows.sort(key=lambda r: r["day"] or "", reverse=True)
    elif by is not None:
        rows.sort(key=lambda r: (-(r["cost_usd"] or 0), -r["calls"], "" if r[by] is None else str(r[by])))
    return rows


def _finish(by: str | None, key: Any, totals: Totals) -> dict[str, Any]:
    v = totals
    calls = v["calls"] or 0
    errors = v["errors"] or 0
    latency_n = v["latency_n"] or 0
    row: dict[str, Any] = {by: key} if by else {}
    row.update(
        calls=calls,
        errors=errors,
        error_rate=round(errors / calls, 4) if calls else None,
        cache_hits=v["cache_hits"] or 0,
        input_tokens=v["input_tokens"],
        output_tokens=v["output_tokens"],
        total_tokens=v["total_tokens"],
        cached_input_tokens=v["cached_input_tokens"],
        cost_usd=None if v["cost_usd"] is None else round(v["cost_usd"], 9),
        cost_saved_usd=None if v["cost_saved_usd"] is None else round(v["cost_saved_usd"], 9),
        unpriced=v["unpriced"] or 0,
        avg_latency_ms=round(v["latency_sum"] / latency_n, 1) if latency_n else None,
        p50_latency_ms=_rollup.estimate_quantile(totals.hist, 0.50),
        p95_latency_ms=_rollup.estimate_quantile(totals.hist, 0.95),
    )
    return row


def _values(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path``, refused with a ``LogError`` that says why when
    it is no SQLite database or cannot be read. A log that SQLite cannot open read-only
    as it is (a read-only copy whose write-ahead log would need recovering, on read-only
    media) is read as an unchanging snapshot: its main file, without the ``-wal``."""
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise LogError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        conn.close()
        raise LogError(f"{path} is not an httptrack call log: {exc}") from None
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro&immutable=1",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise LogError(f"cannot read {path}: {exc}") from None
    return conn


def _call_log_columns(conn: sqlite3.Connection, path: Path | DatabaseURL) -> frozenset[str]:
    """The columns of ``calls``; a ``LogError`` when the database is not a call log."""
    try:
        columns = frozenset(row[1] for row in conn.execute("PRAGMA table_info(calls)"))
    except sqlite3.DatabaseError as exc:
        raise LogError(f"{path} is not an httptrack call log: {exc}") from None
    if not columns:
        raise LogError(f"{path} is not an httptrack call log (it has no calls table)")
    if not columns >= CALL_LOG_COLUMNS:
        raise LogError(f"{path} is not an httptrack call log (its calls table is not httptrack's)")
    return columns


def open_log(path: str | Path | DatabaseURL | None = None) -> Log:
    """Open the call log at ``path`` (default: ``HTTPTRACK_DB`` or the default location)
    for reading. The one thing it writes: the calls of processes that died before writing
    them, kept in the spool beside the log (``record/_spool``), which are part of the log.
    Nothing else: a log of an earlier schema is read as it is (the next call recorded into
    it, or ``httptrack reindex``, brings it up to date). Raises ``FileNotFoundError`` when
    there is no such file, and a ``ValueError`` saying why when the file is no call log.
    ``path`` may be a ``postgresql://`` URL (a shared log in Postgres): read the same way."""
    target = log_target(path) if path is not None else Settings().db
    recover_log(target)
    return Log(target)
