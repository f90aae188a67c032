"""The ``calls`` pages of a call log at millions of calls: datasette's own table SQL,
answered by plans that walk an index and stop at the page's end.

datasette builds one ``select … from calls where … order by … limit N`` per page, a
``select count(*)`` for the count, and a facet query per facet. Its SQL is right and its
results are what the page shows; on millions of calls three of its shapes read every row:

- the next page (``?_next=``) adds ``(c < :v or c is null or (c = :v and id > :k))``: an
  ``OR`` SQLite answers with one index search per branch and a sort of every row they
  find (timeouts at 1M calls). Here it becomes ``c <= :v and (c < :v or id > :k)``: a range
  of the sort column's index, walked in order and stopped at the page's end; the rows
  where ``c`` is null, which that range leaves out, are a second walk of the same index,
  read only when the first comes up short (``_page_sql``);
- a search adds ``rowid in (select rowid from calls_fts where calls_fts match …)``, which
  materialises every match (all of them, for a common word) before the first row. A
  search in the default order is answered from the search index itself, newest recorded
  first (``order by rowid desc``, which FTS5 walks without sorting), joined to ``calls``
  one row at a time until the page is full: the rank and limit are inside the search. Its
  next page continues below the last call's rowid. (So a searched list is in the order
  the calls were recorded, i.e. finished: a long call that started earlier can come
  before a short one that started later.) Under an explicit sort the search is a test of
  each row the sort's index gives (``exists``: one lookup in the search index per row);
- ``count(*)`` of a filter or a search counts every match. The whole table's count comes
  from the rollups (exact); a search alone from the search index (exact, no call read),
  anything else from the calls, both within ``COUNT_TIME_LIMIT_MS``; when that is not
  enough the count is left out: the page says "about N" (``estimate``) and the JSON's
  ``filtered_table_rows_count`` is ``null``, never a wrong number.

A view's count (``slowest_calls``: every call) gets the same short limit.

A day (``?started_at__date=``: datasette's ``date(started_at) = :p``, in the page, its count
and its facets) is read as the range of ``started_at`` it is (``day_ranges``), from the
index that starts with ``started_at`` (or a filter's ``(column, started_at)``): the log has
no index on ``date(started_at)`` (schema 6; each index costs the writer on every call).

Every rewrite gives the rows datasette's SQL gives, in its order (a search's in the order
recorded, as above; ties of a sort column in id order on the first page too, as on the
next ones); tests compare them on a small log. The plugin installs :func:`planned_execute` on each call log's
``Database`` at startup; SQL of any other shape passes through unchanged.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from datasette.database import QueryInterrupted

from ..log import _rollup
from ..log._schema import READ_INDEXES
from ..log._views import FTS_TABLE

__all__ = [
    "COUNT_TIME_LIMIT_MS",
    "FACET_BUDGET_MS",
    "FACET_MAX_ROWS",
    "PAGE",
    "SORT_COLUMNS",
    "PageState",
    "about",
    "combo_count_sql",
    "count_sql",
    "day_ranges",
    "estimate",
    "filter_first",
    "page_sql",
    "planned_execute",
    "sort_fallback",
    "sort_walk",
    "without_next",
]

#: Columns the calls page sorts by (a click on a column's header): each has an index that
#: gives its order (``_schema.READ_INDEXES``). ``id`` is the primary key.
SORT_COLUMNS = ("id", "started_at", "cost_usd", "latency_ms", "total_tokens")
#: Sort columns with equal values (a first page in datasette's order of ties: id). Calls
#: share a ``started_at`` when they start in the same millisecond: their order is id's
#: (datasette's next page goes on in it), not that of the index the list walks.
_TIES = frozenset({"started_at", "cost_usd", "latency_ms", "total_tokens"})
#: How long an exact count may take before the page shows an estimate instead.
COUNT_TIME_LIMIT_MS = 150
#: How long all the facets of one page counted from the calls (not from the rollups) may
#: take together; a facet past it is listed by datasette as timed out.
FACET_BUDGET_MS = 500
#: Facets of a filtered page are counted from the calls only when there are at most this
#: many (about what SQLite counts within the budget, by an index): past it they are listed
#: as timed out at once.
FACET_MAX_ROWS = 50_000


@dataclass
class PageState:
    """What one request's queries learn about its page (set by the plugin's ASGI wrapper)."""

    started: float
    #: The exact count was not made (too slow): the page shows an estimate.
    count_skipped: bool = False

    def facet_time_limit(self, setting: int) -> int:
        """The time limit (ms) for the next facet counted from the calls."""
        left = FACET_BUDGET_MS - (time.monotonic() - self.started) * 1000
        return max(1, min(setting, int(left)))


PAGE: ContextVar[PageState | None] = ContextVar("httptrack_page", default=None)

_TABLE = re.compile(
    r"select (?P<cols>[^()]+?) from calls (?:where (?P<where>.*) )?"
    r"order by (?P<order>[\w ,]+?) limit (?P<limit>\d+)",
    re.S,
)
_COUNT = re.compile(r"select count\(\*\) from calls (?:where (?P<where>.*) )?", re.S)
_VIEW_COUNT = re.compile(r"select count\(\*\) from (?P<view>\w+) ", re.S)
_SEARCH = re.compile(
    rf"rowid in \(select rowid from {FTS_TABLE} where {FTS_TABLE} match "
    r"(?P<match>escape_fts\(:search\)|:search)\)"
)
_COL = "|".join(SORT_COLUMNS)
#: datasette's next-page conditions (``views/table.py``), by sort direction and whether the
#: last row's sort value was null.
_NEXT = {
    "desc": re.compile(
        rf"\((?P<c>{_COL}) < :(?P<v>p\d+) or (?P=c) is null or "
        r"\((?P=c) = :(?P=v) and \(\(id > :(?P<k>p\d+)\)\)\)\)"
    ),
    "desc_null": re.compile(rf"\((?P<c>{_COL}) is null and \(\(id > :(?P<k>p\d+)\)\)\)"),
    "asc": re.compile(
        rf"\((?P<c>{_COL}) > :(?P<v>p\d+) or \((?P=c) = :(?P=v) and \(\(id > :(?P<k>p\d+)\)\)\)\)"
    ),
    "asc_null": re.compile(
        rf"\((?P<c>{_COL}) is not null or \((?P=c) is null and \(\(id > :(?P<k>p\d+)\)\)\)\)"
    ),
    "pk": re.compile(r"\(\(id > :(?P<k>p\d+)\)\)"),
}


def _remove(where: str, clause: str) -> str:
    """``where`` (clauses joined by `` and ``) without the whole clause ``clause``."""
    if where == clause:
        return ""
    if where.startswith(clause + " and "):
        return where[len(clause) + 5 :]
    return where.replace(" and " + clause, "", 1)


def _find_next(where: str) -> tuple[str, re.Match[str]] | None:
    """datasette's next-page condition in ``where`` (it is the last clause): its kind and match."""
    for kind, pattern in _NEXT.items():
        matches = list(pattern.finditer(where))
        if matches and where.endswith(matches[-1].group(0)):
            return kind, matches[-1]
    return None


def without_next(sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """datasette's SQL for a page's facets (``select … from calls where … ``) on a page
    after the first, without the next-page condition: the facets of the whole filtered
    list (as on its first page, often from the rollups), not of the calls after this page."""
    facet = re.fullmatch(r"(?P<head>select .+? from calls )where (?P<where>.*) ", sql, re.S)
    found = None if facet is None else _find_next(facet["where"])
    if facet is None or found is None:
        return sql, params
    match = found[1]
    rest = _remove(facet["where"], match.group(0))
    used = {match["k"], *([match["v"]] if "v" in match.groupdict() else [])}
    kept = {k: v for k, v in params.items() if k not in used}
    return facet["head"] + (f"where {rest} " if rest else ""), kept


#: datasette's day filter (``?started_at__date=``), ``date("started_at") = :pN``.
_DAY = re.compile(r'(?<![\w.+])date\((?P<q>"?)started_at(?P=q)\) = :(?P<p>p\d+)')


def day_ranges(sql: str) -> str:
    """``sql`` with each ``date("started_at") = :p`` (datasette's day filter) as the range of
    ``started_at`` that day is, which an index on ``started_at`` finds (an expression on
    the column rules its indexes out). The same calls: ``started_at`` is ISO-8601 in UTC
    (``2026-03-07T12:34:56.789Z``), so its date is its first ten characters, and a text
    sorts between its date and the next day's; ``date(:p) = :p`` keeps out a value that is
    no date (``2026-3-7``, ``2026-03-07T10:00``), which ``date()`` of no call equals."""
    return _DAY.sub(
        lambda m: (
            f"(started_at >= :{m['p']} and started_at < date(:{m['p']}, '+1 day') "
            f"and date(:{m['p']}) = :{m['p']})"
        ),
        sql,
    )


def page_sql(sql: str, params: dict[str, Any]) -> str | None:
    """The SQL that gives datasette's page of ``calls`` (``sql``) by walking an index, or
    ``None`` when ``sql`` is not such a page or needs no help."""
    table = _TABLE.fullmatch(sql.strip())
    if table is None:
        return None
    cols, where, order, limit = table["cols"], table["where"] or "", table["order"], table["limit"]
    search = _SEARCH.search(where)
    found = _find_next(where)
    default_order = order in ("started_at desc", "started_at desc, id")
    if search is not None and default_order:
        return _search_page(cols, where, search, found, limit)
    if search is not None:
        # Under another order: each row the order's index gives, tested against the search.
        where = where.replace(
            search.group(0),
            f"exists (select 1 from {FTS_TABLE} where {FTS_TABLE} match {search['match']} "
            f"and {FTS_TABLE}.rowid = calls.rowid)",
        )
    if found is None or found[0] == "pk":
        sort = order.split()[0]
        if sort in _TIES and ", " not in order:
            # datasette orders its first page by the column alone and the next by it and
            # id: ties (costs of 0) in id order on both, or page 2 repeats calls of page 1.
            order = f"{order}, id"
        elif search is None:
            return None
        clause = f"where {where} " if where else ""
        return f"select {cols} from calls {clause}order by {order} limit {limit}"
    kind, match = found
    column, k = match["c"], match["k"]
    rest = _remove(where, match.group(0))
    also = f"{rest} and " if rest else ""
    if kind == "desc_null":  # the null tail only: an equality on the sort index
        return (
            f"select {cols} from calls where {also}{column} is null and id > :{k} "
            f"order by {order} limit {limit}"
        )
    if kind == "asc_null":  # the rest of the nulls, then every non-null value
        # (Ordered by the column too, all null there: the sort index gives that order.)
        first, first_order, tail = f"{column} is null and id > :{k}", f"{column}, id", f"{column} is not null"
    elif kind == "asc":
        # No null tail: nulls sort first, so a page after a non-null value has none.
        v = match["v"]
        return (
            f"select {cols} from calls where {also}{column} >= :{v} and ({column} > :{v} or id > :{k}) "
            f"order by {order} limit {limit}"
        )
    else:  # desc: the values below the last one, then the nulls
        v = match["v"]
        first = f"{column} <= :{v} and ({column} < :{v} or id > :{k})"
        first_order, tail = f"{column} desc, id", f"{column} is null"
    tail_order = f"{order.replace(', id', '')}, id"
    # Two walks of the sort column's index, each stopped at the page's end; the page is the
    # first `limit` of the two, in datasette's order.
    return f"""select {cols} from calls where rowid in (
  select rowid from (select rowid from calls where {also}{first} order by {first_order} limit {limit})
  union all
  select rowid from (select rowid from calls where {also}{tail} order by {tail_order} limit {limit})
) order by {order} limit {limit}"""


def _search_page(cols: str, where: str, search: re.Match[str], found: Any, limit: str) -> str:
    """A searched page in the default order: the search index's rowids, newest first,
    each call looked up and tested against the other filters until the page is full."""
    rest = _remove(where, search.group(0))
    bound = ""
    if found is not None:
        rest = _remove(rest, found[1].group(0))
        # The next page: below the rowid of the last call shown (its id is the key).
        last = f"(select rowid from calls where id = :{found[1]['k']})"
        bound = f" and {FTS_TABLE}.rowid < coalesce({last}, 0)"
    also = f" and {rest}" if rest else ""
    return (
        f"select {cols} from {FTS_TABLE} cross join calls on calls.rowid = {FTS_TABLE}.rowid "
        f"where {FTS_TABLE} match {search['match']}{bound}{also} "
        f"order by {FTS_TABLE}.rowid desc limit {limit}"
    )


#: The other plan for a searched page with filters, once the search index's walk has taken
#: this long (a rare filter: most matches fail it).
SEARCH_WALK_MS = 250
_SEARCH_PAGE = re.compile(
    rf"select (?P<cols>[^()]+?) from {FTS_TABLE} cross join calls on calls.rowid = {FTS_TABLE}.rowid "
    rf"where {FTS_TABLE} match (?P<match>\S+)(?P<bound> and {FTS_TABLE}.rowid < coalesce\(.+?, 0\))?"
    rf" and (?P<rest>.+) order by {FTS_TABLE}.rowid desc limit (?P<limit>\d+)",
    re.S,
)


def filter_first(sql: str) -> str | None:
    """The same searched page (same rows, same order) from the other filters' index: each
    call they select looked up in the search index, sorted newest recorded first. Quick
    when the filters select few calls, where ``_search_page``'s walk finds few among many
    matches (``+rowid``: sorted, not walked in rowid order testing every call). ``None``:
    ``sql`` is no searched page with filters."""
    page = _SEARCH_PAGE.fullmatch(sql)
    if page is None:
        return None
    bound = (page["bound"] or "").replace(f"{FTS_TABLE}.rowid <", "+calls.rowid <")
    return (
        f"select {page['cols']} from calls where {page['rest']}{bound} and exists (select 1 from {FTS_TABLE} "
        f"where {FTS_TABLE} match {page['match']} and {FTS_TABLE}.rowid = calls.rowid) "
        f"order by +calls.rowid desc limit {page['limit']}"
    )


#: How long a filtered page sorted by cost, latency or tokens walks the sort column's index
#: (each call it gives tested against the filters) before the filters' index finds the
#: calls instead (their matches then sorted).
SORT_WALK_MS = 200
#: ... unless every equality filter matches more calls than this (from the rollups): then
#: sorting the matches would take longer than any walk, which runs without that limit.
FILTER_FIRST_MAX = 150_000
#: The sort columns' indexes (``_schema.READ_INDEXES``), by column.
_SORT_INDEXES = {columns.split(",")[0]: index for index, columns in READ_INDEXES.items()}
_WALKS = "|".join(_SORT_INDEXES)
#: A ``from calls where … order by <sort column>`` (the page, or one walk of a next page's
#: two); the ``where`` holds no other ``from calls ``.
_SORTED = re.compile(
    rf"from calls where (?P<where>(?:(?!from calls ).)*?) order by (?P<c>{_WALKS})(?P<rest>[\w ,]*? limit)",
    re.S,
)
_EXISTS = re.compile(
    rf"exists \(select 1 from {FTS_TABLE} where {FTS_TABLE} match (?P<match>\S+) "
    rf"and {FTS_TABLE}\.rowid = calls\.rowid\)"
)
#: datasette's ``"column" = :pN`` filter on a column that has an index ``idx_calls_<column>``
#: (``(column, started_at)``) and whose calls by value some rollup counts.
_EQUAL = re.compile(r'(?<![+\w])"(?P<column>provider|model|user|service|status)" = :(?P<p>p\d+)')


def sort_walk(sql: str) -> str | None:
    """A filtered page sorted by cost, latency or tokens (``page_sql``'s, or datasette's)
    walking the sort column's index: ``INDEXED BY`` it, as SQLite does not choose it when a
    filter has an index of its own (then it finds every match and sorts them all: 2.25M
    calls for ``?provider=openai`` at 5M). Quick when matches are common along the order;
    ``None``: no such page."""
    if not sql.startswith("select "):
        return None
    walked, n = _SORTED.subn(
        lambda m: (
            f"from calls indexed by {_SORT_INDEXES[m['c']]} where {m['where']} order by {m['c']}{m['rest']}"
        ),
        sql,
    )
    return walked if n else None


def sort_fallback(sql: str, selective: str | None) -> str:
    """The same page found by a filter's index, its matches sorted (for matches rare along
    the sort order: the errors, all of cost 0, at the end of a walk by cost):
    ``INDEXED BY`` the index of ``selective``, the equality filter with fewest calls (from
    the rollups; SQLite, by its statistics alone, took the provider's 2.25M calls over the
    errors' 125k); a search with no such filter as the search index's matches (datasette's
    ``rowid in``), looked up by rowid (``NOT INDEXED``); else as SQLite chooses. (Not ``+``
    on the other columns: that drops a column's affinity, and datasette's next-page values
    are text.)"""
    if selective is not None:
        table = f"calls indexed by idx_calls_{selective}"
    elif _EXISTS.search(sql) and not _EQUAL.search(sql):
        sql = _EXISTS.sub(
            lambda m: f"rowid in (select rowid from {FTS_TABLE} where {FTS_TABLE} match {m['match']})", sql
        )
        table = "calls not indexed"
    else:
        return sql
    return _SORTED.sub(lambda m: f"from {table} where {m['where']} order by {m['c']}{m['rest']}", sql)


def equality_filters(sql: str, params: dict[str, Any]) -> list[tuple[str, Any]]:
    """The page's ``"column" = :pN`` filters on rollup columns: (column, value)."""
    return [(m["column"], params.get(m["p"])) for m in _EQUAL.finditer(sql)]


def fewest_calls_sql(filters: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """SQL giving each filter's calls (from the rollups, by column): ``column, calls``."""
    parts, params = [], []
    for column, value in filters:
        if column == "model":
            parts.append(f"select 'model', sum(calls) from {_rollup.DETAIL_TABLE} where model = ?")
            params.append(value)
        else:
            parts.append(f"select ?, sum(calls) from {_rollup.ROLLUP_TABLE} where dim = ? and value = ?")
            params.extend([column, column, value])
    return " union all ".join(parts), params


def count_sql(sql: str) -> str | None:
    """SQL for datasette's ``count(*)`` of ``calls`` that reads no call: the whole table's
    from the rollups (plus the calls past their bookmark), a search's from the search index.
    ``None``: neither can."""
    count = _COUNT.fullmatch(sql)
    if count is None:
        return None
    where = count["where"] or ""
    if not where:
        return (
            f"select coalesce((select sum(calls) from {_rollup.ROLLUP_TABLE} where dim = ''), 0) + "
            "(select count(*) from calls not indexed where rowid > coalesce("
            f"(select cast(value as integer) from {_rollup.STATE_TABLE} "
            f"where key = '{_rollup.BOOKMARK_KEY}'), 0))"
        )
    search = _SEARCH.fullmatch(where)
    if search is not None:
        return f"select count(*) from {FTS_TABLE} where {FTS_TABLE} match {search['match']}"
    return None


#: datasette's ``"column" = :pN`` filter, on a column ``calls_rollup_combo`` has.
_EQUALS = re.compile(r'"(?P<column>provider|model|user|service|operation|status|cached)" = :(?P<p>p\d+)')


def combo_count_sql(sql: str, params: dict[str, Any]) -> str | None:
    """SQL for datasette's ``count(*)`` of ``calls`` filtered by equality on columns of
    ``calls_rollup_combo`` (two facets clicked: ``?provider=openai&user=alice``), exact, from
    it plus the calls past its bookmark, when a user is among them. ``None``: another shape,
    no user, or a value it stores otherwise (``''``, which it shares with ``NULL``;
    ``cached`` other than ``0``/``1``)."""
    count = _COUNT.fullmatch(sql)
    if count is None or not count["where"]:
        return None
    clauses = count["where"].split(" and ")
    for clause in clauses:
        equals = _EQUALS.fullmatch(clause)
        if equals is None:
            return None
        value = params.get(equals["p"])
        if (
            not isinstance(value, str)
            or not value
            or (equals["column"] == "cached" and value not in ("0", "1"))
        ):
            return None
    where = " and ".join(clauses)
    if '"user" = ' not in where:  # one range of its key; else it would read the whole table
        return None
    return (
        f"select coalesce((select sum(calls) from {_rollup.COMBO_TABLE} where {where}), 0) + "
        f"(select count(*) from calls not indexed where rowid > coalesce((select cast(value as integer) "
        f"from {_rollup.STATE_TABLE} where key = '{_rollup.COMBO_BOOKMARK_KEY}'), 0) and {where})"
    )


Execute = Callable[..., Awaitable[Any]]


def planned_execute(execute: Execute, has_rollups: Callable[[], bool]) -> Execute:
    """``Database.execute`` of a call log, with the plans above for the calls pages."""

    async def run(
        sql: str,
        params: Any = None,
        truncate: bool = False,
        custom_time_limit: int | None = None,
        page_size: int | None = None,
        log_sql_errors: bool = True,
    ) -> Any:
        page = PAGE.get()
        if page is not None and isinstance(params, dict | None):
            values = params or {}
            sql = day_ranges(sql)
            if sql.startswith("select count(*) from "):
                return await _count(execute, sql, values, page, has_rollups)
            better = page_sql(sql, values)
            if better is not None:
                sql = better
            walk = sort_walk(sql)
            if walk is not None:
                fewest = await _fewest_calls(execute, sql, values, has_rollups)
                if fewest is not None and fewest[1] > FILTER_FIRST_MAX:
                    limit = custom_time_limit  # every filter matches too many calls to sort them
                else:
                    limit = SORT_WALK_MS
                try:
                    return await execute(
                        walk, params, truncate=truncate, custom_time_limit=limit, log_sql_errors=False
                    )
                except sqlite3.OperationalError:  # a log of an earlier schema: no sort indexes
                    pass
                except QueryInterrupted:
                    if limit != SORT_WALK_MS:
                        raise
                    by_filter = sort_fallback(sql, None if fewest is None else fewest[0])
                    try:
                        return await execute(
                            by_filter,
                            params,
                            truncate=truncate,
                            custom_time_limit=custom_time_limit,
                            page_size=page_size,
                            log_sql_errors=False,
                        )
                    except sqlite3.OperationalError:  # an index an older or newer schema lacks
                        pass
            other = filter_first(sql)
            if other is not None:
                try:
                    return await execute(sql, params, truncate=truncate, custom_time_limit=SEARCH_WALK_MS)
                except QueryInterrupted:
                    sql = other
        return await execute(
            sql,
            params,
            truncate=truncate,
            custom_time_limit=custom_time_limit,
            page_size=page_size,
            log_sql_errors=log_sql_errors,
        )

    return run


async def _fewest_calls(
    execute: Execute, sql: str, params: dict[str, Any], has_rollups: Callable[[], bool]
) -> tuple[str, int] | None:
    """Of the page's equality filters, the column whose value has the fewest calls, and
    how many (from the rollups); ``None``: no such filter, or no rollups."""
    filters = equality_filters(sql, params)
    if not filters or not has_rollups():
        return None
    counts, args = fewest_calls_sql(filters)
    try:
        rows = (await execute(counts, args)).rows
    except (sqlite3.Error, QueryInterrupted):  # a hint only: without it, SQLite chooses
        return None
    column, calls = min(rows, key=lambda row: row[1] or 0)
    return str(column), int(calls or 0)


async def _count(
    execute: Execute, sql: str, params: dict[str, Any], page: PageState, has_rollups: Callable[[], bool]
) -> Any:
    better = count_sql(sql)
    if better is not None and f"{FTS_TABLE} match" not in better:  # from the rollups
        if has_rollups():
            return await execute(better, params)
        better = None  # a log of an earlier schema: datasette's count
    combo = combo_count_sql(sql, params)
    if combo is not None and has_rollups():
        # Only while the combination rollup is there and (nearly) caught up with the calls.
        lag = await execute(
            f"select (select count(*) from sqlite_master where name = '{_rollup.COMBO_TABLE}'), "
            "(select coalesce(max(rowid), 0) from calls) - coalesce((select cast(value as integer) "
            f"from {_rollup.STATE_TABLE} where key = '{_rollup.COMBO_BOOKMARK_KEY}'), 0)"
        )
        (exists, behind) = lag.rows[0]
        if exists and behind <= _rollup.COMBO_MAX_LAG:
            return await execute(combo, params)
    try:
        # A search's count from the search index reads no call, but a phrase of common
        # words is costly to match everywhere: it has the same time limit.
        return await execute(better or sql, params, custom_time_limit=COUNT_TIME_LIMIT_MS)
    except QueryInterrupted:
        page.count_skipped = True
        raise


def about(n: int) -> str:
    """An estimated count for people: ``about 1.2M``, ``about 35k``, ``about 800``."""
    if n >= 1_000_000:
        return f"about {n / 1_000_000:.1f}M".replace(".0M", "M")
    if n >= 10_000:
        return f"about {round(n / 1000):,}k"
    if n >= 1000:
        return f"about {n / 1000:.1f}k".replace(".0k", "k")
    return f"about {n:,}"


#: A search's share of the calls is estimated from this many of the newest.
SAMPLE = 20_000
#: ``?column=value`` filters whose share of the calls the rollups know: a column of
#: ``calls_rollup`` (its dimension of the same name) or of ``calls_rollup_detail``.
_MAIN_DIMS = frozenset({"provider", "user", "service", "operation", "status"})


def estimate(conn: Any, selections: list[tuple[str, str, str]], search: str | None) -> int | None:
    """How many calls match ``selections`` (datasette's ``(column, lookup, value)``) and
    the search ``search``, estimated as if they were independent: the calls, times each
    filter's share of them (from the rollups), times the search's among the newest
    ``SAMPLE`` calls.
    ``None``: a filter whose share no rollup knows."""
    import sqlite3

    try:
        total = conn.execute(f"select sum(calls) from {_rollup.ROLLUP_TABLE} where dim = ''").fetchone()[0]
        if not total:
            return None
        share = 1.0
        for column, lookup, value in selections:
            if lookup != "exact":
                return None
            if column in _MAIN_DIMS:
                sql = f"select sum(calls) from {_rollup.ROLLUP_TABLE} where dim = ? and value = ?"
                args: list[Any] = [column, value]
            elif column in ("model", "cached"):
                sql = f"select sum(calls) from {_rollup.DETAIL_TABLE} where {column} = ?"
                args = [value]
            else:
                return None
            share *= (conn.execute(sql, args).fetchone()[0] or 0) / total
        if search:
            # The search's share of the newest SAMPLE calls (the search index walks just
            # that range of rowids: counting every match is what was too slow).
            from ..log._reader import fts_query

            (top,) = conn.execute("select coalesce(max(rowid), 0) from calls").fetchone()
            sampled = min(top, SAMPLE)  # rowids are dense but for pruned calls: near enough
            (found,) = conn.execute(
                f"select count(*) from {FTS_TABLE} where {FTS_TABLE} match ? and rowid > ?",
                [fts_query(search) or '""', top - SAMPLE],
            ).fetchone()
            share *= found / sampled if sampled else 0
    except sqlite3.Error:
        return None
    return round(float(total) * share)
