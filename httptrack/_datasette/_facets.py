"""datasette's facets on ``calls``, answered from the daily rollups when that is exact.

datasette counts a facet's values with one ``GROUP BY`` over the page's rows: on the
unfiltered ``calls`` page that is the whole table, an index scan of 120–150 ms per facet on
a million calls. The rollups (``_rollup``) already hold those counts per day. These facet
classes give the same results as datasette's ``ColumnFacet`` and ``DateFacet`` (values,
counts, order, truncation, links, ``selected``), and when the page shows the whole table
(no filter, no search: datasette's SQL for the rows has no ``WHERE``) they read them from
the rollups:

- ``provider``, ``user``, ``service``, ``status``: ``calls_rollup``'s rows of that
  dimension; ``model`` (the model asked for, not the rollup's
  ``coalesce(response_model, model)``): ``calls_rollup_detail``;
- ``started_at`` by day: ``calls_rollup``'s day totals;
- plus the calls past each rollup's bookmark (not rolled up yet), counted from ``calls`` by
  rowid range, in the same statement, so a roll-up in between cannot count a call twice.
  (``NOT INDEXED``: else SQLite walks the column's whole index, checking each rowid.) The
  writer rolls up every second, so they are a few hundred at most; when a rollup lags
  further (``calls_rollup_detail`` under a writer of an earlier version), reading the rows
  past it would cost more than datasette's index scan, and datasette's SQL runs instead.

A rollup stores ``NULL`` and ``''`` alike as ``''``; datasette leaves ``NULL`` out and counts
``''``, so every ``''`` call is counted from ``calls`` (an index lookup of that value; no
rowid condition there, or SQLite may prefer scanning the table by rowid).

When the page is filtered only by equality on the detail rollup's columns (``?provider=``,
``?model=``, ``?status=``, ``?operation=``, ``?cached=``, any of them together) and/or by a
day (``?started_at__date=``), and by nothing else (no search, no other filter, the first
page), the ``provider``, ``model``, ``status`` and day facets are read from
``calls_rollup_detail`` in the same way: its rows matching the filters, plus the matching
calls past its bookmark and the matching ``''`` calls, counted from ``calls``. The ``user``
and ``service`` facets are not in it, and are counted from the calls.

Anything else (another filter, a search, a page after the first, another table or
database, a log without rollups) counts the calls with datasette's own facet SQL — on a
filtered page, with one change: it groups by ``+column`` (or ``+date(column)``), not the
column. The rows and their order are the same (``+`` keeps the column's collation, and
``order by count desc, value`` orders groups with distinct values completely), but SQLite
can no longer walk the facet column's index to group without sorting, looking up every
call in the table to test the filter (9.7 s for six facets of ``?status=error`` on a
million calls); it finds the matching calls by the filter's index (or scans the covering
``idx_calls_usage``) and sorts their few groups.

The rollup's day is the first ten characters of ``started_at``; datasette's is
``date(started_at)``. They agree for every ``started_at`` httptrack writes (ISO-8601 in
UTC); ``date()`` of each day is taken all the same, so a malformed one is left out as
datasette would.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from datasette.database import QueryInterrupted
from datasette.facets import ColumnFacet, DateFacet
from datasette.filters import Filters
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args

from ..log import _rollup
from ._metadata import is_call_log
from ._pages import FACET_MAX_ROWS, PAGE, without_next

__all__ = [
    "RollupColumnFacet",
    "RollupDateFacet",
    "column_counts_sql",
    "date_counts_sql",
    "filtered_column_counts_sql",
    "filtered_date_counts_sql",
]

#: ``calls`` columns with a row per value in ``calls_rollup`` (its dimension of that name),
#: and the one ``calls_rollup_detail`` holds as it is (``model``: the main rollup's is
#: ``coalesce(response_model, model)``). Each has an index (``_store``), which finds its
#: ``''`` values; other columns' facets are datasette's.
MAIN_COLUMNS = frozenset({"provider", "user", "service", "status"})
DETAIL_COLUMNS = frozenset({"model"})
#: On a filtered page: the facets ``calls_rollup_detail`` can count (its key has them), and
#: the filters it can apply, ``?column=value`` (the value as text, as the rollup stores it;
#: ``''`` is not one: the rollup stores ``NULL`` as ``''``, and ``cached`` only as ``0``/``1``).
FILTERED_COLUMNS = frozenset({"provider", "model", "status"})
FILTERS = _rollup.DETAIL_FILTERS
#: The same for ``calls_rollup_combo``, which also has the user and the service: read when
#: the page is filtered by one of them, or its facet is one of them.
COMBO_COLUMNS = FILTERED_COLUMNS | {"user", "service"}
COMBO_FILTERS = _rollup.COMBO_FILTERS
#: At most this many calls past a rollup's bookmark (by rowid) for it to be read: each costs
#: a few microseconds by rowid; datasette's facet, an index scan, ~100 ms per million calls.
MAX_LAG = 10_000


def _mark(key: str) -> str:
    """A CTE ``mark(top)``: the highest rowid the rollup holds (0: none)."""
    return (
        "with mark(top) as (select coalesce("
        f"(select cast(value as integer) from {_rollup.STATE_TABLE} where key = '{key}'), 0))\n"
    )


def column_counts_sql(column: str, tables: set[str], limit: int) -> str | None:
    """SQL giving ``value, count`` for a column facet over the whole of ``calls``, as
    datasette's ``ColumnFacet`` orders and limits them, from the rollup in ``tables``
    that holds ``column`` (``None``: none does)."""
    col = escape_sqlite(column)
    if column in MAIN_COLUMNS and {_rollup.ROLLUP_TABLE, _rollup.STATE_TABLE} <= tables:
        mark = _mark(_rollup.BOOKMARK_KEY)
        rolled = (
            f"select value, sum(calls) as n from {_rollup.ROLLUP_TABLE} "
            f"where dim = '{column}' and value != '' group by value"
        )
    elif column in DETAIL_COLUMNS and {_rollup.DETAIL_TABLE, _rollup.STATE_TABLE} <= tables:
        mark = _mark(_rollup.DETAIL_BOOKMARK_KEY)
        rolled = (
            f"select {col} as value, sum(calls) as n from {_rollup.DETAIL_TABLE} "
            f"where {col} != '' group by {col}"
        )
    else:
        return None
    return f"""{mark}select value, sum(n) as count from (
  {rolled}
  union all
  select {col}, count(*) from calls where {col} = '' group by {col}
  union all
  select {col}, count(*) from calls not indexed
    where rowid > (select top from mark) and {col} != '' group by {col}
)
group by value order by count desc, value limit {limit}"""


def filtered_column_counts_sql(
    column: str, tables: set[str], limit: int, where: str, rolled_where: str
) -> str | None:
    """SQL giving ``value, count`` for a column facet over the calls matching ``where``
    (datasette's, over ``calls``), as datasette's ``ColumnFacet`` orders and limits them,
    from ``calls_rollup_detail`` (``rolled_where``: the same filters over it). ``None``: it
    does not hold ``column``. The ``''`` calls are found by the column's index and then
    tested (``CROSS JOIN``: else SQLite may read every call the filter matches)."""
    table, key = _filtered_rollup(column, rolled_where, tables)
    if table is None:
        return None
    col = escape_sqlite(column)
    return f"""{_mark(key)}select value, sum(n) as count from (
  select {col} as value, sum(calls) as n from {table}
    where {col} != '' and ({rolled_where}) group by {col}
  union all
  select calls.{col}, count(*) from (select rowid as id from calls where {col} = '') as blank
    cross join calls on calls.rowid = blank.id where {where} group by calls.{col}
  union all
  select {col}, count(*) from calls not indexed
    where rowid > (select top from mark) and {col} != '' and ({where}) group by {col}
)
group by value order by count desc, value limit {limit}"""


def filtered_date_counts_sql(
    column: str, tables: set[str], limit: int, where: str, rolled_where: str
) -> str | None:
    """SQL giving ``value, count`` for a date facet over the calls matching ``where``, as
    ``filtered_column_counts_sql`` (``None``: the detail rollup cannot give it)."""
    table, key = _filtered_rollup(None, rolled_where, tables) if column == "started_at" else (None, "")
    if table is None:
        return None
    return f"""{_mark(key)}select value, sum(n) as count from (
  select date(day) as value, sum(calls) as n from {table}
    where {rolled_where} group by date(day)
  union all
  select date(started_at), count(*) from calls not indexed
    where rowid > (select top from mark) and ({where}) group by date(started_at)
)
where value is not null
group by value order by count desc, value limit {limit}"""


def _filtered_rollup(column: str | None, rolled_where: str, tables: set[str]) -> tuple[str | None, str]:
    """The rollup (and its bookmark's key) that counts facet ``column`` (``None``: the day)
    on a page filtered by ``rolled_where``: the detail rollup unless a user or a service is
    involved, then ``calls_rollup_combo`` if the page is filtered by a user (one range of
    its key: without one, each facet would read the whole table, ~0.5 s per million calls);
    ``None`` if the one needed is not in ``tables``."""
    if column in ("user", "service") or any(f'"{c}" =' in rolled_where for c in ("user", "service")):
        ok = (column is None or column in COMBO_COLUMNS) and '"user" =' in rolled_where
        if ok and {_rollup.COMBO_TABLE, _rollup.STATE_TABLE} <= tables:
            return _rollup.COMBO_TABLE, _rollup.COMBO_BOOKMARK_KEY
        return None, ""
    if (column is None or column in FILTERED_COLUMNS) and {
        _rollup.DETAIL_TABLE,
        _rollup.STATE_TABLE,
    } <= tables:
        return _rollup.DETAIL_TABLE, _rollup.DETAIL_BOOKMARK_KEY
    return None, ""


def date_counts_sql(column: str, tables: set[str], limit: int) -> str | None:
    """SQL giving ``value, count`` for a date facet over the whole of ``calls``, as
    datasette's ``DateFacet`` orders and limits them (``None``: no rollup has it)."""
    if column != "started_at" or not {_rollup.ROLLUP_TABLE, _rollup.STATE_TABLE} <= tables:
        return None
    return f"""{_mark(_rollup.BOOKMARK_KEY)}select value, sum(n) as count from (
  select date(day) as value, sum(calls) as n from {_rollup.ROLLUP_TABLE}
    where dim = '' and value = '' group by date(day)
  union all
  select date(started_at), count(*) from calls not indexed
    where rowid > (select top from mark) group by date(started_at)
)
where value is not null
group by value order by count desc, value limit {limit}"""


class _FromRollups:
    """What both facet classes share: when the rollups can answer, and with which tables."""

    ds: Any
    request: Any
    database: str
    table: str | None
    sql: str
    params: Any
    row_count: int | None

    def whole_table(self) -> bool:
        """Whether the page shows the whole table (datasette's SQL has no ``WHERE``)."""
        return (
            self.table is not None
            and not self.params
            and self.sql.endswith(f" from {escape_sqlite(self.table)} ")
        )

    def detail_filters(self) -> tuple[str, str] | None:
        """When the page is ``calls`` filtered by nothing but ``COMBO_FILTERS`` and a day
        (``?started_at__date=``): datasette's ``WHERE`` (over ``calls``, its parameters
        ``self.params``) and the same over ``calls_rollup_detail`` (or, with a user or a
        service among them, ``calls_rollup_combo``: same columns, and those two). Anything else added to
        datasette's SQL (a search, ``_where``, the next page) makes it differ: ``None``."""
        if self.table != "calls" or not self.params:
            return None
        args = self.request.args
        # The filters as datasette reads them from the URL (TableView), and their SQL.
        pairs = [(k, v) for k in args if not (k.startswith("_") and "__" not in k) for v in args.getlist(k)]
        filters = Filters(sorted(pairs))
        clauses, params = filters.build_where_clauses("calls")
        where = " and ".join(clauses)
        if not clauses or params != self.params or not self.sql.endswith(f" from calls where {where} "):
            return None
        rolled = []
        for i, (column, lookup, value) in enumerate(filters.selections()):
            if (
                lookup == "exact"
                and column in COMBO_FILTERS
                and value
                and (column != "cached" or value in ("0", "1"))
            ):
                rolled.append(f'"{column}" = :p{i}')
            elif lookup == "date" and column == "started_at":
                rolled.append(f"date(day) = :p{i}")  # the rollup's day: as in date_counts_sql
            else:
                return None
        return where, " and ".join(rolled)

    async def rollup_tables(self) -> set[str]:
        """The rollup tables this page's facets can read (with ``httptrack_state``): none
        unless the page shows the whole ``calls`` table of an httptrack call log, or the
        calls ``detail_filters`` can select, and only those at most ``MAX_LAG`` calls behind."""
        if self.table != "calls" or not (self.whole_table() or self.detail_filters()):
            return set()
        if not is_call_log(getattr(self.ds.get_database(self.database), "path", None)):
            return set()
        names = (_rollup.ROLLUP_TABLE, _rollup.DETAIL_TABLE, _rollup.COMBO_TABLE, _rollup.STATE_TABLE)
        placeholders = ", ".join("?" * len(names))
        rows = await self.ds.execute(
            self.database,
            f"select name from sqlite_master where type = 'table' and name in ({placeholders})",
            names,
        )
        tables = {row[0] for row in rows}
        if _rollup.STATE_TABLE not in tables:
            return set()
        mark = f"(select cast(value as integer) from {_rollup.STATE_TABLE} where key = ?)"
        bookmarks = await self.ds.execute(
            self.database,
            f"select max(rowid), {mark}, {mark}, {mark} from calls",
            [_rollup.BOOKMARK_KEY, _rollup.DETAIL_BOOKMARK_KEY, _rollup.COMBO_BOOKMARK_KEY],
        )
        top, main, detail, combo = bookmarks.rows[0]
        for table, bookmark in (
            (_rollup.ROLLUP_TABLE, main),
            (_rollup.DETAIL_TABLE, detail),
            (_rollup.COMBO_TABLE, combo),
        ):
            if (top or 0) - (bookmark or 0) > MAX_LAG:
                tables.discard(table)
        return tables

    def group_by(self, expr: str) -> str:
        """What datasette's facet SQL groups by: ``expr`` on the whole table (walking its
        index, it needs no sort), ``+expr`` on a filtered page (SQLite then finds the rows
        by the filter's index, not by reading every call in the order of ``expr``'s index,
        and sorts their groups: the same rows, in the same order)."""
        return f"+{expr}" if self.table is not None and not self.whole_table() else expr

    async def value_counts(self, counts: tuple[str, Any] | None, fallback: str) -> Any:
        """The facet's ``value, count`` rows: from ``counts`` (SQL over the rollups and its
        parameters) if given, else from datasette's facet SQL, with datasette's time limit
        either way."""
        sql, params = counts or (fallback, self.params)
        limit = self.ds.setting("facet_time_limit_ms")
        page = PAGE.get()
        if counts is None and page is not None:
            # Counted from the calls: within what is left of the page's budget, and not at
            # all when they are too many to count in it (or too many for datasette to have
            # counted them): that time would only be lost.
            limit = page.facet_time_limit(limit)
            many = self.row_count is None or self.row_count > FACET_MAX_ROWS
            if self.table == "calls" and not self.whole_table() and many:
                raise QueryInterrupted(sqlite3.OperationalError("interrupted"), sql, params)
        return await self.ds.execute(self.database, sql, params, truncate=False, custom_time_limit=limit)

    def forget_next_page(self) -> None:
        """On a page after the first, count the facets of the whole list (datasette's
        SQL for them has the next-page condition: the calls after this page)."""
        if self.table == "calls":
            self.sql, self.params = without_next(self.sql, self.params)

    def rollup_counts(
        self,
        column: str,
        tables: set[str],
        limit: int,
        whole: Any,
        filtered: Any,
    ) -> tuple[str, Any] | None:
        """The SQL (and parameters) counting a facet's values from the rollups, from
        ``whole`` on the whole table or ``filtered`` on a filtered page (``None``: neither can)."""
        if not tables:
            return None
        if self.whole_table():
            sql = whole(column, tables, limit)
            return None if sql is None else (sql, [])
        filters = self.detail_filters()
        if filters is None:  # pragma: no cover - rollup_tables() gave none
            return None
        sql = filtered(column, tables, limit, *filters)
        return None if sql is None else (sql, self.params)


class RollupColumnFacet(_FromRollups, ColumnFacet):
    """datasette's ``ColumnFacet`` (the same results and links), counted from the rollups
    on the whole ``calls`` table. Metadata: ``{"httptrack_column": "provider"}``."""

    type = "httptrack_column"

    async def suggest(self) -> list[Any]:
        return []  # datasette's ColumnFacet suggests columns already

    async def facet_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        # datasette 0.65's ColumnFacet.facet_results, with value_counts() for its query.
        facet_results: list[dict[str, Any]] = []
        facets_timed_out: list[str] = []
        configs = self.get_configs()
        if not configs:
            return facet_results, facets_timed_out
        qs_pairs = self.get_querystring_pairs()
        facet_size = self.get_facet_size()
        self.forget_next_page()
        tables = await self.rollup_tables()
        for source_and_config in configs:
            config = source_and_config["config"]
            source = source_and_config["source"]
            column = config.get("column") or config["simple"]
            facet_sql = """
                select {col} as value, count(*) as count from (
                    {sql}
                )
                where {col} is not null
                group by {group} order by count desc, value limit {limit}
            """.format(
                col=escape_sqlite(column),
                group=self.group_by(escape_sqlite(column)),
                sql=self.sql,
                limit=facet_size + 1,
            )
            try:
                facet_rows_results = await self.value_counts(
                    self.rollup_counts(
                        column, tables, facet_size + 1, column_counts_sql, filtered_column_counts_sql
                    ),
                    facet_sql,
                )
                facet_results_values: list[dict[str, Any]] = []
                facet_results.append(
                    {
                        "name": column,
                        "type": ColumnFacet.type,  # shown as datasette's own
                        "hideable": source != "metadata",
                        "toggle_url": self.ds.urls.path(
                            path_with_removed_args(self.request, {self._facet_arg(source): column})
                        ),
                        "results": facet_results_values,
                        "truncated": len(facet_rows_results) > facet_size,
                    }
                )
                facet_rows = facet_rows_results.rows[:facet_size]
                if self.table:
                    # Attempt to expand foreign keys into labels
                    values = [row["value"] for row in facet_rows]
                    expanded = await self.ds.expand_foreign_keys(self.database, self.table, column, values)
                else:
                    expanded = {}
                for row in facet_rows:
                    column_qs = column
                    if column.startswith("_"):
                        column_qs = f"{column}__exact"
                    selected = (column_qs, str(row["value"])) in qs_pairs
                    if selected:
                        toggle_path = path_with_removed_args(self.request, {column_qs: str(row["value"])})
                    else:
                        toggle_path = path_with_added_args(self.request, {column_qs: row["value"]})
                    facet_results_values.append(
                        {
                            "value": row["value"],
                            "label": expanded.get((column, row["value"]), row["value"]),
                            "count": row["count"],
                            "toggle_url": self.ds.absolute_url(self.request, self.ds.urls.path(toggle_path)),
                            "selected": selected,
                        }
                    )
            except QueryInterrupted:
                facets_timed_out.append(column)
        return facet_results, facets_timed_out

    def _facet_arg(self, source: str) -> str:
        # What adds this facet to a URL: datasette's own for the metadata's (whose link
        # is never shown: they cannot be hidden), ours for one asked for in the URL.
        return "_facet" if source == "metadata" else f"_facet_{self.type}"


class RollupDateFacet(_FromRollups, DateFacet):
    """datasette's ``DateFacet`` (the same results and links), counted from the rollups
    for ``started_at`` on the whole ``calls`` table. Metadata: ``{"httptrack_date": "started_at"}``."""

    type = "httptrack_date"

    async def suggest(self) -> list[Any]:
        return []  # datasette's DateFacet suggests columns already

    async def facet_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        # datasette 0.65's DateFacet.facet_results, with value_counts() for its query.
        facet_results: list[dict[str, Any]] = []
        facets_timed_out: list[str] = []
        configs = self.get_configs()
        if not configs:
            return facet_results, facets_timed_out
        args = dict(self.get_querystring_pairs())
        facet_size = self.get_facet_size()
        self.forget_next_page()
        tables = await self.rollup_tables()
        for source_and_config in configs:
            config = source_and_config["config"]
            source = source_and_config["source"]
            column = config.get("column") or config["simple"]
            facet_sql = """
                select date({col}) as value, count(*) as count from (
                    {sql}
                )
                where date({col}) is not null
                group by {group} order by count desc, value limit {limit}
            """.format(
                col=escape_sqlite(column),
                group=self.group_by(f"date({escape_sqlite(column)})"),
                sql=self.sql,
                limit=facet_size + 1,
            )
            try:
                facet_rows_results = await self.value_counts(
                    self.rollup_counts(
                        column, tables, facet_size + 1, date_counts_sql, filtered_date_counts_sql
                    ),
                    facet_sql,
                )
                facet_results_values: list[dict[str, Any]] = []
                facet_arg = "_facet_date" if source == "metadata" else f"_facet_{self.type}"
                facet_results.append(
                    {
                        "name": column,
                        "type": DateFacet.type,  # shown as datasette's own
                        "results": facet_results_values,
                        "hideable": source != "metadata",
                        "toggle_url": path_with_removed_args(self.request, {facet_arg: column}),
                        "truncated": len(facet_rows_results) > facet_size,
                    }
                )
                facet_rows = facet_rows_results.rows[:facet_size]
                for row in facet_rows:
                    selected = str(args.get(f"{column}__date")) == str(row["value"])
                    if selected:
                        toggle_path = path_with_removed_args(
                            self.request, {f"{column}__date": str(row["value"])}
                        )
                    else:
                        toggle_path = path_with_added_args(self.request, {f"{column}__date": row["value"]})
                    facet_results_values.append(
                        {
                            "value": row["value"],
                            "label": row["value"],
                            "count": row["count"],
                            "toggle_url": self.ds.absolute_url(self.request, toggle_path),
                            "selected": selected,
                        }
                    )
            except QueryInterrupted:
                facets_timed_out.append(column)
        return facet_results, facets_timed_out
