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

Anything else (a filter, a search, a page after the first, another table or database, a
log without rollups) runs exactly the SQL datasette's own facet would.

The rollup's day is the first ten characters of ``started_at``; datasette's is
``date(started_at)``. They agree for every ``started_at`` httptrack writes (ISO-8601 in
UTC); ``date()`` of each day is taken all the same, so a malformed one is left out as
datasette would.
"""

from __future__ import annotations

from typing import Any

from datasette.database import QueryInterrupted
from datasette.facets import ColumnFacet, DateFacet
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args

from .. import _rollup

__all__ = ["RollupColumnFacet", "RollupDateFacet", "column_counts_sql", "date_counts_sql"]

_STATE = "httptrack_state"
#: ``calls`` columns with a row per value in ``calls_rollup`` (its dimension of that name),
#: and the one ``calls_rollup_detail`` holds as it is (``model``: the main rollup's is
#: ``coalesce(response_model, model)``). Each has an index (``_store``), which finds its
#: ``''`` values; other columns' facets are datasette's.
MAIN_COLUMNS = frozenset({"provider", "user", "service", "status"})
DETAIL_COLUMNS = frozenset({"model"})
_MAIN_BOOKMARK = "rollup_rowid"
_DETAIL_BOOKMARK = "rollup_detail_rowid"
#: At most this many calls past a rollup's bookmark (by rowid) for it to be read: each costs
#: a few microseconds by rowid; datasette's facet, an index scan, ~100 ms per million calls.
MAX_LAG = 10_000


def _mark(key: str) -> str:
    """A CTE ``mark(top)``: the highest rowid the rollup holds (0: none)."""
    return (
        "with mark(top) as (select coalesce("
        f"(select cast(value as integer) from {_STATE} where key = '{key}'), 0))\n"
    )


def column_counts_sql(column: str, tables: set[str], limit: int) -> str | None:
    """SQL giving ``value, count`` for a column facet over the whole of ``calls``, as
    datasette's ``ColumnFacet`` orders and limits them, from the rollup in ``tables``
    that holds ``column`` (``None``: none does)."""
    col = escape_sqlite(column)
    if column in MAIN_COLUMNS and {_rollup.ROLLUP_TABLE, _STATE} <= tables:
        mark = _mark(_MAIN_BOOKMARK)
        rolled = (
            f"select value, sum(calls) as n from {_rollup.ROLLUP_TABLE} "
            f"where dim = '{column}' and value != '' group by value"
        )
    elif column in DETAIL_COLUMNS and {_rollup.DETAIL_TABLE, _STATE} <= tables:
        mark = _mark(_DETAIL_BOOKMARK)
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


def date_counts_sql(column: str, tables: set[str], limit: int) -> str | None:
    """SQL giving ``value, count`` for a date facet over the whole of ``calls``, as
    datasette's ``DateFacet`` orders and limits them (``None``: no rollup has it)."""
    if column != "started_at" or not {_rollup.ROLLUP_TABLE, _STATE} <= tables:
        return None
    return f"""{_mark(_MAIN_BOOKMARK)}select value, sum(n) as count from (
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
    database: str
    table: str | None
    sql: str
    params: Any

    async def rollup_tables(self) -> set[str]:
        """The rollup tables this page's facets can read (with ``httptrack_state``): none
        unless the page shows the whole ``calls`` table of an httptrack call log, and only
        those at most ``MAX_LAG`` calls behind."""
        from . import is_call_log

        whole_table = (
            self.table == "calls"
            and not self.params
            and self.sql.endswith(f" from {escape_sqlite('calls')} ")
        )
        if not whole_table or not is_call_log(getattr(self.ds.get_database(self.database), "path", None)):
            return set()
        names = (_rollup.ROLLUP_TABLE, _rollup.DETAIL_TABLE, _STATE)
        placeholders = ", ".join("?" * len(names))
        rows = await self.ds.execute(
            self.database,
            f"select name from sqlite_master where type = 'table' and name in ({placeholders})",
            names,
        )
        tables = {row[0] for row in rows}
        if _STATE not in tables:
            return set()
        mark = f"(select cast(value as integer) from {_STATE} where key = ?)"
        bookmarks = await self.ds.execute(
            self.database, f"select max(rowid), {mark}, {mark} from calls", [_MAIN_BOOKMARK, _DETAIL_BOOKMARK]
        )
        top, main, detail = bookmarks.rows[0]
        for table, bookmark in ((_rollup.ROLLUP_TABLE, main), (_rollup.DETAIL_TABLE, detail)):
            if (top or 0) - (bookmark or 0) > MAX_LAG:
                tables.discard(table)
        return tables

    async def value_counts(self, sql: str | None, fallback: str) -> Any:
        """The facet's ``value, count`` rows: from ``sql`` (over the rollups) if given,
        else from datasette's own facet SQL, with datasette's time limit either way."""
        return await self.ds.execute(
            self.database,
            sql or fallback,
            [] if sql else self.params,
            truncate=False,
            custom_time_limit=self.ds.setting("facet_time_limit_ms"),
        )


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
                group by {col} order by count desc, value limit {limit}
            """.format(col=escape_sqlite(column), sql=self.sql, limit=facet_size + 1)
            try:
                facet_rows_results = await self.value_counts(
                    column_counts_sql(column, tables, facet_size + 1), facet_sql
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
                group by date({col}) order by count desc, value limit {limit}
            """.format(col=escape_sqlite(column), sql=self.sql, limit=facet_size + 1)
            try:
                facet_rows_results = await self.value_counts(
                    date_counts_sql(column, tables, facet_size + 1), facet_sql
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
