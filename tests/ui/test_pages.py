"""The calls pages at scale (``_datasette/_pages``): every page, sort, filter and search
gives what datasette's own SQL gives, through plans that use the indexes; counts exact
where cheap, estimated where not. On a small log written through the writer's Store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from datasette.app import Datasette
from datasette.database import Database, QueryInterrupted
from recorded_log import write_log

from httptrack._datasette import _pages
from httptrack.cli._ui import make_datasette
from httptrack.log._schema import READ_INDEXES


@pytest.fixture
def log_db(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    write_log(path)
    return path


@pytest.fixture
def planned(log_db: Path) -> Datasette:
    return make_datasette(log_db)


@pytest.fixture
def plain(log_db: Path) -> Datasette:
    """The same, with datasette's own SQL (the planner taken off again)."""
    return make_datasette(log_db)


async def unplanned(ds: Datasette) -> Datasette:
    await ds.invoke_startup()
    db = ds.get_database("log")
    db.execute = Database.execute.__get__(db)  # type: ignore[method-assign]
    return ds


async def pages(ds: Datasette, query: str) -> list[list[str]]:
    """Each page's ids, following datasette's ``next`` to the end."""
    out: list[list[str]] = []
    path = f"/log/calls.json?_size=7&_nofacet=1&_shape=objects&{query}"
    for _ in range(200):
        response = await ds.client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        data = response.json()
        out.append([r["id"] for r in data["rows"]])
        if not data["next"]:
            return out
        path = f"/log/calls.json?_size=7&_nofacet=1&_shape=objects&{query}&_next={quote(data['next'])}"
    raise AssertionError("no last page")


@pytest.mark.parametrize("query", ["_sort=id", "provider=openai&user=u0", "status=error"])
async def test_every_page_is_datasettes(planned: Datasette, plain: Datasette, query: str) -> None:
    got = await pages(planned, query)
    assert got == await pages(await unplanned(plain), query)
    ids = [i for page in got for i in page]
    where = " AND ".join(
        f"{k} = '{v}'" for k, v in (p.split("=") for p in query.split("&") if p[:1] not in "_")
    )
    assert (
        len(ids)
        == len(set(ids))
        == naive(planned_path(planned), f"SELECT count(*) FROM calls WHERE {where or 1}")[0]
    )


@pytest.mark.parametrize(
    ("query", "where", "order"),
    [
        ("started_at__date=2026-03-01", "date(started_at) = '2026-03-01'", "started_at DESC"),
        ("started_at__date=2026-02-28", "date(started_at) = '2026-02-28'", "started_at DESC"),
        (
            "started_at__date=2026-03-01&provider=openai&_sort_desc=cost_usd",
            "date(started_at) = '2026-03-01' AND provider = 'openai'",
            "cost_usd DESC",
        ),
        (
            "started_at__date=2026-03-01&service=a&_sort=started_at",
            "date(started_at) = '2026-03-01' AND service = 'a'",
            "started_at",
        ),
        ("started_at__date=2026-3-1", "0", "id"),  # not a date as date() writes it: no call
        ("started_at__date=2026-03-01T03:00", "0", "id"),  # nor this
        ("started_at__date=2026-03-02", "0", "id"),
    ],
)
async def test_a_day_is_the_calls_of_that_day(
    planned: Datasette, plain: Datasette, log_db: Path, query: str, where: str, order: str
) -> None:
    """``?started_at__date=`` read as a range of ``started_at``: the calls, the count and
    the facets datasette's own ``date(started_at) = :p`` gives."""
    got = [i for page in await pages(planned, query) for i in page]
    assert got == naive(log_db, f"SELECT id FROM calls WHERE {where} ORDER BY {order}, id")
    ours = (await planned.client.get(f"/log/calls.json?{query}")).json()
    theirs = (await (await unplanned(plain)).client.get(f"/log/calls.json?{query}")).json()
    assert ours["filtered_table_rows_count"] == theirs["filtered_table_rows_count"] == len(got)
    assert ours["facet_results"] == theirs["facet_results"]


@pytest.mark.parametrize(
    "query",
    ["started_at__date=2026-03-01", "started_at__date=2026-03-01&service=a", "started_at__date=2026-02-28"],
)
async def test_a_day_is_a_range_of_an_index(planned: Datasette, log_db: Path, query: str) -> None:
    """Every statement of a day's page (its rows, count, facets counted from the calls)
    finds the day's calls as a range of an index on ``started_at``; none walks a whole
    index or the table."""
    await planned.invoke_startup()
    db = planned.get_database("log")
    seen: list[tuple[str, Any]] = []
    inner = Database.execute.__get__(db)

    async def record(sql: str, params: Any = None, **kwargs: Any) -> Any:
        seen.append((sql, params))
        return await inner(sql, params, **kwargs)

    db.execute = _pages.planned_execute(record, lambda: True)  # type: ignore[method-assign]
    conn = sqlite3.connect(log_db)
    conn.execute("ANALYZE")
    try:
        assert (await planned.client.get(f"/log/calls.json?_size=7&{query}")).status_code == 200
        day = [(s, p) for s, p in seen if "started_at >= :p" in s and " calls not indexed " not in s]
        assert len(day) >= 4  # the page, its count, the user and service facets
        for sql, params in day:
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params or {})]
            assert not [step for step in plan if step.split()[:2] == ["SCAN", "calls"]], (sql, plan)
            if sql.startswith(("select id, ", "select count(*) ")):  # the page, its count
                assert any("started_at>? AND started_at<?" in step for step in plan), (sql, plan)
    finally:
        conn.close()


def test_day_ranges() -> None:
    assert _pages.day_ranges('select * from calls where date("started_at") = :p0 and x = :p1') == (
        "select * from calls where (started_at >= :p0 and started_at < date(:p0, '+1 day') "
        "and date(:p0) = :p0) and x = :p1"
    )
    for other in ("group by +date(started_at)", "date(started_at) > :p0", "date(day) = :p0"):
        assert _pages.day_ranges(other) == other


def planned_path(ds: Datasette) -> Path:
    return Path(ds.get_database("log").path)


@pytest.mark.parametrize(
    ("query", "order", "where"),
    [
        # Newest first (the default) and oldest first: calls of the same millisecond in id
        # order, as datasette's next page takes them (not as the index walked gives them).
        ("", "started_at DESC", "1"),
        ("_sort=started_at", "started_at", "1"),
        ("_sort_desc=cost_usd", "cost_usd DESC", "1"),
        ("_sort=cost_usd", "cost_usd", "1"),
        ("_sort_desc=latency_ms", "latency_ms DESC", "1"),
        ("_sort=latency_ms", "latency_ms", "1"),
        ("_sort_desc=total_tokens", "total_tokens DESC", "1"),
        ("_sort=total_tokens", "total_tokens", "1"),
        (
            "provider=openai&user=u0&_sort_desc=cost_usd",
            "cost_usd DESC",
            "provider = 'openai' AND user = 'u0'",
        ),
        ("status=error&_sort=cost_usd", "cost_usd", "status = 'error'"),
        ("status=error&_sort_desc=cost_usd", "cost_usd DESC", "status = 'error'"),
        (
            "provider=openai&status=success&_sort_desc=total_tokens",
            "total_tokens DESC",
            "provider = 'openai' AND status = 'success'",
        ),
        (
            "_search=refund&user=u0&_sort=latency_ms",
            "latency_ms",
            "user = 'u0' AND rowid IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'refund')",
        ),
        (
            "_search=refund&_sort_desc=cost_usd",
            "cost_usd DESC",
            "rowid IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'refund')",
        ),
    ],
)
async def test_sorted_pages_are_the_sorted_calls(
    planned: Datasette, log_db: Path, query: str, order: str, where: str
) -> None:
    """Every call once, in datasette's order (ties by id, nulls last when descending),
    however many share a value (costs of 0, errors' missing costs)."""
    got = [i for page in await pages(planned, query) for i in page]
    assert got == naive(log_db, f"SELECT id FROM calls WHERE {where} ORDER BY {order}, id")


def naive(db: Path, sql: str, params: Any = ()) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(sql, params)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("_search=refund", ""),
        ("_search=%22refund+policy%22", ""),
        ("_search=refund&user=u0", "AND user = 'u0'"),
        (
            "_search=refund+python&provider=openai&status=success",
            "AND provider = 'openai' AND status = 'success'",
        ),
    ],
)
async def test_a_search_lists_every_match_newest_recorded_first(
    planned: Datasette, log_db: Path, query: str, where: str
) -> None:
    match = query.split("&")[0].split("=")[1].replace("+", " ").replace("%22", '"')
    terms = match if match.startswith('"') else " ".join(f'"{w}"' for w in match.split())
    want = naive(
        log_db,
        f"SELECT id FROM calls WHERE rowid IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?) {where} "
        "ORDER BY rowid DESC",
        [terms],
    )
    assert len(want) > 7  # more than a page
    got = await pages(planned, query)
    assert [i for page in got for i in page] == want
    data = (await planned.client.get(f"/log/calls.json?_nofacet=1&{query}")).json()
    assert data["filtered_table_rows_count"] == len(want)  # exact: cheap on a small log


async def test_counts(planned: Datasette, log_db: Path) -> None:
    for query, where in [
        ("", "1"),
        ("provider=openai&user=u0", "provider = 'openai' AND user = 'u0'"),
        ("status=error", "status = 'error'"),
    ]:
        data = (await planned.client.get(f"/log/calls.json?_nofacet=1&{query}")).json()
        assert (
            data["filtered_table_rows_count"] == naive(log_db, f"SELECT count(*) FROM calls WHERE {where}")[0]
        )


async def test_a_count_by_equal_facets_comes_from_the_combination_rollup(
    planned: Datasette, log_db: Path
) -> None:
    async def count(query: str) -> int:
        data = (await planned.client.get(f"/log/calls.json?_nofacet=1&{query}")).json()
        return int(data["filtered_table_rows_count"])

    query = "provider=openai&user=u0"
    want = naive(log_db, "SELECT count(*) FROM calls WHERE provider = 'openai' AND user = 'u0'")[0]
    assert await count(query) == want
    conn = sqlite3.connect(log_db)
    with conn:  # wrong on purpose: the count follows it
        conn.execute(
            "UPDATE calls_rollup_combo SET calls = calls + 1000 WHERE provider = 'openai' AND user = 'u0'"
        )
    conn.close()
    n = naive(log_db, "SELECT count(*) FROM calls_rollup_combo WHERE provider = 'openai' AND user = 'u0'")[0]
    assert await count(query) == want + 1000 * n
    # Shapes it cannot count: datasette's own count, exact.
    assert (
        await count("provider=openai&user=")
        == naive(log_db, "SELECT count(*) FROM calls WHERE provider = 'openai' AND user = ''")[0]
    )
    assert (
        await count("provider=openai&host__contains=o")
        == naive(log_db, "SELECT count(*) FROM calls WHERE provider = 'openai' AND host LIKE '%o%'")[0]
    )


def test_combo_count_sql_shapes() -> None:
    sql = 'select count(*) from calls where "provider" = :p0 and "user" = :p1 '
    assert _pages.combo_count_sql(sql, {"p0": "openai", "p1": "u0"}) is not None
    assert _pages.combo_count_sql(sql, {"p0": "openai", "p1": ""}) is None  # '' is NULL's there
    cached = 'select count(*) from calls where "cached" = :p0 and "user" = :p1 '
    assert _pages.combo_count_sql(cached, {"p0": "1", "p1": "u0"}) is not None
    assert _pages.combo_count_sql(cached, {"p0": "01", "p1": "u0"}) is None
    service = 'select count(*) from calls where "service" = :p0 '  # no user: the whole table
    assert _pages.combo_count_sql(service, {"p0": "a"}) is None
    assert _pages.combo_count_sql('select count(*) from calls where "host" = :p0 ', {"p0": "x"}) is None
    assert _pages.combo_count_sql("select count(*) from calls ", {}) is None


async def test_a_count_too_slow_to_make_is_an_estimate(
    planned: Datasette, log_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def too_slow(execute: Any, sql: str, params: Any, page: Any, has_rollups: Any) -> Any:
        page.count_skipped = True
        raise QueryInterrupted(Exception("interrupted"), sql, params)

    monkeypatch.setattr(_pages, "_count", too_slow)
    data = (await planned.client.get("/log/calls.json?_nofacet=1&provider=openai&user=u0")).json()
    assert data["filtered_table_rows_count"] is None  # unknown, never a wrong number
    page = (await planned.client.get("/log/calls?provider=openai&user=u0")).text
    total, openai, u0 = (
        naive(log_db, "SELECT count(*) FROM calls")[0],
        naive(log_db, "SELECT count(*) FROM calls WHERE provider = 'openai'")[0],
        naive(log_db, "SELECT count(*) FROM calls WHERE user = 'u0'")[0],
    )
    assert f">{_pages.about(round(total * openai / total * u0 / total))} calls</strong>" in page
    page = (await planned.client.get("/log/calls?_search=refund")).text
    matches = naive(log_db, "SELECT count(*) FROM calls_fts WHERE calls_fts MATCH 'refund'")[0]
    assert f">{_pages.about(matches)} calls</strong>" in page
    page = (await planned.client.get("/log/calls?host=x")).text  # no rollup knows: no figure
    assert "httptrack-count" not in page


def test_about() -> None:
    assert [_pages.about(n) for n in (7, 1234, 35_400, 1_230_000, 5_000_000)] == [
        "about 7",
        "about 1.2k",
        "about 35k",
        "about 1.2M",
        "about 5M",
    ]


async def test_page_two_has_the_facets_of_the_whole_list(planned: Datasette) -> None:
    first = (await planned.client.get("/log/calls.json?_size=7&provider=openai")).json()
    second = (
        await planned.client.get(f"/log/calls.json?_size=7&provider=openai&_next={quote(first['next'])}")
    ).json()
    counts = {k: [(v["value"], v["count"]) for v in f["results"]] for k, f in first["facet_results"].items()}
    assert counts == {
        k: [(v["value"], v["count"]) for v in f["results"]] for k, f in second["facet_results"].items()
    }
    assert sum(c for _, c in counts["provider"]) == first["filtered_table_rows_count"]


# -- the plans --------------------------------------------------------------------------------


def full_scans(conn: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    """The steps of ``sql``'s plan that read all of ``calls`` or sort all it reads."""
    plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    # A sort is of the page's few rows when they are looked up by a list of rowids (the
    # index walks below the list stop at the page's end).
    bounded = any("INTEGER PRIMARY KEY (rowid=?)" in step for step in plan)
    return [
        step
        for step in plan
        if step in ("SCAN calls", "SCAN calls NOT INDEXED")
        or (step == "USE TEMP B-TREE FOR ORDER BY" and not bounded)
    ]


PAGES = [
    "",
    "started_at__date=2026-03-01",  # a day: a range of started_at (no index on date(started_at))
    "started_at__date=2026-03-01&service=a",
    "_sort_desc=cost_usd",
    "_sort_desc=latency_ms",
    "_sort_desc=total_tokens",
    "_sort=cost_usd",
    "provider=openai&user=u0",
    "_search=refund",
    "_search=%22refund+policy%22",
]


@pytest.mark.parametrize("query", PAGES)
async def test_each_page_walks_an_index(planned: Datasette, log_db: Path, query: str) -> None:
    await planned.invoke_startup()
    db = planned.get_database("log")
    seen: list[tuple[str, Any]] = []
    inner = Database.execute.__get__(db)

    async def record(sql: str, params: Any = None, **kwargs: Any) -> Any:
        seen.append((sql, params))
        return await inner(sql, params, **kwargs)

    db.execute = _pages.planned_execute(record, lambda: True)  # type: ignore[method-assign]
    from datasette.utils import escape_fts

    conn = sqlite3.connect(log_db)
    conn.create_function("escape_fts", 1, escape_fts)
    conn.execute("ANALYZE")  # as a big log's: SQLite plans by the statistics
    try:
        first = (await planned.client.get(f"/log/calls.json?_size=7&_nofacet=1&{query}")).json()
        await planned.client.get(f"/log/calls.json?_size=7&_nofacet=1&{query}&_next={quote(first['next'])}")
        pages_sql = [(s, p) for s, p in seen if " limit 8" in s]
        counts = [(s, p) for s, p in seen if s.startswith("select count(*)")]
        assert len(pages_sql) == 2
        for sql, params in pages_sql + (counts if "user" not in query else []):
            assert not full_scans(conn, sql, params or {}), sql
    finally:
        conn.close()


def test_the_read_indexes_exist(log_db: Path) -> None:
    names = set(naive(log_db, "SELECT name FROM sqlite_master WHERE type = 'index'"))
    assert set(READ_INDEXES) <= names and "idx_calls_latency" not in names


@pytest.mark.parametrize("query", ["_search=refund&user=u2", "_search=refund&provider=openai&status=success"])
async def test_a_search_with_filters_has_a_second_plan_with_the_same_rows(
    planned: Datasette, log_db: Path, query: str
) -> None:
    """When the search index's walk is slow (a rare filter), the page comes from the
    filters' index instead: the same rows in the same order, every page."""
    from datasette.utils import escape_fts

    await planned.invoke_startup()
    db = planned.get_database("log")
    seen: list[tuple[str, Any]] = []
    inner = Database.execute.__get__(db)

    async def record(sql: str, params: Any = None, **kwargs: Any) -> Any:
        seen.append((sql, params))
        return await inner(sql, params, **kwargs)

    db.execute = _pages.planned_execute(record, lambda: True)  # type: ignore[method-assign]
    await pages(planned, query)
    searched = [(s, p) for s, p in seen if s.startswith("select id, ") and "calls_fts cross join" in s]
    assert len(searched) >= 2  # a first page and a next one
    conn = sqlite3.connect(log_db)
    conn.create_function("escape_fts", 1, escape_fts)
    conn.execute("ANALYZE")
    try:
        for sql, params in searched:
            other = _pages.filter_first(sql)
            assert other is not None
            assert conn.execute(other, params).fetchall() == conn.execute(sql, params).fetchall()
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {other}", params)]
            # The filters' index finds the calls (their matches are then sorted).
            assert any(step.startswith("SEARCH calls USING INDEX") for step in plan), plan
            assert "SCAN calls" not in plan, plan
    finally:
        conn.close()


async def test_facets_too_many_to_count_are_not_tried(
    planned: Datasette, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack._datasette import _facets

    path = "/log/calls.json?provider=openai&service__contains=a"  # no rollup has that filter
    assert len((await planned.client.get(path)).json()["facet_results"]) == 6
    monkeypatch.setattr(_facets, "FACET_MAX_ROWS", 5)
    assert (await planned.client.get(path)).json()["facet_results"] == {}  # timed out, at once
    # A user with other filters: every facet counted from calls_rollup_combo (one range of
    # it); a service without a user would read all of it: from the calls, not tried here.
    both = (await planned.client.get("/log/calls.json?provider=openai&user=u0")).json()["facet_results"]
    assert set(both) == {"provider", "model", "user", "service", "status", "started_at"}
    assert (await planned.client.get("/log/calls.json?provider=openai&service=a")).json()[
        "facet_results"
    ] == {}
    # The whole list's (from the rollups) and a filter the detail rollup answers are counted.
    assert len((await planned.client.get("/log/calls.json")).json()["facet_results"]) == 6
    facets = (await planned.client.get("/log/calls.json?provider=openai")).json()["facet_results"]
    assert set(facets) == {"provider", "model", "status", "started_at"}


SORTED_FILTERED = [
    ("status=error&_sort_desc=cost_usd", "cost_usd DESC", "status = 'error'", "idx_calls_status"),
    (
        "provider=openai&user=u0&_sort=latency_ms",
        "latency_ms",
        "provider = 'openai' AND user = 'u0'",
        "idx_calls_user",
    ),
    (
        "_search=refund&_sort_desc=total_tokens",
        "total_tokens DESC",
        "rowid IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'refund')",
        None,
    ),
]


@pytest.mark.parametrize(("query", "order", "where", "index"), SORTED_FILTERED)
async def test_a_sorted_filtered_page_walks_the_sort_index_or_else_the_filters(
    planned: Datasette, log_db: Path, query: str, order: str, where: str, index: str | None
) -> None:
    """A filtered page sorted by cost, latency or tokens first walks the sort column's
    index (stopping at the page's end); when that is slow (matches rare along the order),
    the filters' index finds the calls instead (of equal filters, the one with fewest calls
    by the rollups) and they are sorted: the same rows in the same order, every page."""
    await planned.invoke_startup()
    db = planned.get_database("log")
    inner = Database.execute.__get__(db)
    walks: list[tuple[str, Any]] = []
    fallbacks: list[tuple[str, Any]] = []

    async def slow_walks(sql: str, params: Any = None, **kwargs: Any) -> Any:
        if any(f" indexed by {name} " in sql for name in READ_INDEXES):  # as if slower than its limit
            walks.append((sql, params))
            raise QueryInterrupted(sqlite3.OperationalError("interrupted"), sql, params)
        if " limit 8" in sql and (" indexed by " in sql or " not indexed where " in sql):  # a page's
            fallbacks.append((sql, params))
        return await inner(sql, params, **kwargs)

    db.execute = _pages.planned_execute(slow_walks, lambda: True)  # type: ignore[method-assign]
    got = [i for page in await pages(planned, query) for i in page]
    assert got == naive(log_db, f"SELECT id FROM calls WHERE {where} ORDER BY {order}, id")
    assert len(walks) >= 2 and len(fallbacks) == len(walks)  # a first page and a next one
    from datasette.utils import escape_fts

    conn = sqlite3.connect(log_db)
    conn.create_function("escape_fts", 1, escape_fts)
    conn.execute("ANALYZE")
    try:
        for sql, params in walks:
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params or {})]
            # The sort column's index, walked (its whole key, or a covering one for a next page's rowids).
            assert any(
                step.split(" (")[0].endswith(tuple(f"INDEX {name}" for name in READ_INDEXES)) for step in plan
            ), plan
            assert not full_scans(conn, sql, params or {}), plan
        for n, (sql, params) in enumerate(fallbacks):
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params or {})]
            assert "SCAN calls" not in plan, plan
            if index is not None and n == 0:  # the first page: the filter with fewest calls
                assert any(f"USING INDEX {index} " in step for step in plan), plan
    finally:
        conn.close()


async def test_a_sorted_filtered_page_of_a_log_without_the_sort_indexes(log_db: Path) -> None:
    """A log of an earlier schema (before m004's sort indexes, or an index dropped since):
    the page is still datasette's, by SQLite's own plan."""
    conn = sqlite3.connect(log_db)
    conn.execute("DROP INDEX idx_calls_cost")
    conn.execute("DROP INDEX idx_calls_status")
    conn.close()
    ds = make_datasette(log_db)
    for query in ("status=error&_sort_desc=cost_usd", "provider=openai&user=u0&_sort=cost_usd"):
        where = " AND ".join(f"{k} = '{v}'" for k, v in (p.split("=") for p in query.split("&")[:-1]))
        got = [i for page in await pages(ds, query) for i in page]
        assert got == naive(
            log_db,
            f"SELECT id FROM calls WHERE {where} ORDER BY cost_usd {'DESC' if 'desc' in query else ''}, id",
        )
