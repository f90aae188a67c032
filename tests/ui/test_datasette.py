"""``httptrack ui`` and plain datasette over the call log, through datasette's in-process
test client, on a database filled through the transport."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from datasette.app import Datasette
from datasette.database import Database
from datasette.plugins import pm
from recorded_log import record_calls, rows

import httptrack
from httptrack import _datasette
from httptrack.cli._ui import make_datasette
from httptrack.log._schema import DESCRIPTIONS
from httptrack.log._views import VIEWS


@pytest.fixture
def log_db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def ids(log_db: Path) -> list[str]:
    return record_calls(log_db)


@pytest.fixture
def ds(log_db: Path, ids: list[str]) -> Datasette:
    return make_datasette(log_db)


async def get_json(ds: Datasette, path: str) -> Any:
    response = await ds.client.get(path)
    assert response.status_code == 200, (path, response.text[:500])
    return response.json()


async def test_calls_newest_first_with_facets(ds: Datasette, ids: list[str], log_db: Path) -> None:
    data = await get_json(ds, "/log/calls.json?_shape=objects")
    # Newest first; calls of the same millisecond in id order, as datasette's next page goes on.
    newest = sorted(rows(log_db), key=lambda r: r["id"])
    newest.sort(key=lambda r: r["started_at"], reverse=True)
    assert [r["id"] for r in data["rows"]] == [r["id"] for r in newest]
    assert sorted(r["id"] for r in newest) == sorted(ids)
    facets = data["facet_results"]
    assert list(facets) == ["provider", "model", "user", "service", "status", "started_at"]
    counts = {f: {v["value"]: v["count"] for v in facets[f]["results"]} for f in facets}
    assert counts["provider"] == {"openai": 4, "anthropic": 2, "ollama": 2}
    assert counts["user"] == {"alice": 3, "bob": 3, "carol": 2}
    assert counts["status"] == {"success": 6, "error": 2}
    assert sum(counts["started_at"].values()) == 8  # by day


async def test_calls_page_shows_column_descriptions_and_search(ds: Datasette, ids: list[str]) -> None:
    page = (await ds.client.get("/log/calls")).text
    for column in ("cost_usd", "cached_input_tokens", "response_text"):
        assert DESCRIPTIONS[column] in html.unescape(page), column
    assert 'name="_search"' in page
    assert "What each column means" in page  # the long list of descriptions is folded
    found = await get_json(ds, "/log/calls.json?_search=umbrellas&_shape=array")
    assert sorted(r["id"] for r in found) == sorted([ids[5], ids[2]])  # two calls may share a millisecond


async def test_bodies_render_readably(ds: Datasette, ids: list[str], log_db: Path) -> None:
    # Every column of a call, as datasette shows a row (a call's own page is its record).
    page = (await ds.client.get(f"/log/calls/{ids[2]}?_all_columns=1")).text
    raw = rows(log_db, "id = ?", (ids[2],))[0]
    assert '<details class="httptrack-body">' in page
    pretty = json.dumps(json.loads(raw["request_body"]), indent=2, ensure_ascii=False)
    assert pretty in html.unescape(page)
    assert 'class="httptrack-text"' in page and "Hello! You said: What is the refund policy" in page
    assert "sk-ant-test-not-real" not in page
    streamed = (await ds.client.get(f"/log/calls/{ids[3]}?_all_columns=1")).text
    assert "event: message_start" in streamed  # a stream is shown as received, as text


@pytest.mark.parametrize("view", list(VIEWS))
async def test_views_answer(ds: Datasette, ids: list[str], view: str, log_db: Path) -> None:
    data = await get_json(ds, f"/log/{view}.json?_shape=array")
    all_rows = rows(log_db)
    with httptrack.open_log(log_db) as log:
        if view == "cost_per_day":
            (day,) = log.stats(by="day")
            assert data == [
                {
                    "day": day["day"],
                    "calls": 8,
                    "errors": 2,
                    "input_tokens": day["input_tokens"],
                    "output_tokens": day["output_tokens"],
                    "cost_usd": round(day["cost_usd"], 6),
                    "cost_saved_usd": None,
                    "cache_hits": 0,
                }
            ]
        elif view.startswith("cost_by_"):
            by = view.removeprefix("cost_by_")
            want = {g[by]: (g["calls"], g["errors"], round(g["cost_usd"], 6)) for g in log.stats(by=by)}
            assert {r[by]: (r["calls"], r["errors"], r["cost_usd"]) for r in data} == want
            costs = [r["cost_usd"] for r in data]
            assert costs == sorted(costs, reverse=True)
        elif view == "errors":
            assert [(r["id"], r["http_status"]) for r in data] == [(ids[7], 429), (ids[6], 404)]
        elif view == "slowest_calls":
            latencies = sorted((r["latency_ms"] for r in all_rows), reverse=True)
            assert [r["latency_ms"] for r in data] == latencies
        elif view == "cache_savings":
            assert [(r["calls"], r["cache_hits"], r["hit_rate_pct"]) for r in data] == [(8, 0, 0.0)]
        else:  # pragma: no cover
            raise AssertionError(f"untested view {view}")


async def test_canned_queries(ds: Datasette, ids: list[str], log_db: Path) -> None:
    alice = await get_json(ds, "/log/cost_for_user.json?user=alice&_shape=array")
    alice_rows = rows(log_db, "user = 'alice'")
    assert [(r["calls"], r["errors"], r["input_tokens"]) for r in alice] == [
        (3, 1, sum(r["input_tokens"] or 0 for r in alice_rows))
    ]
    session = await get_json(ds, "/log/session_calls.json?session=s-1&_shape=array")
    assert [r["id"] for r in session] == ids[:2]
    found = await get_json(ds, "/log/search.json?q=shipping&_shape=array")
    assert [r["id"] for r in found] == [ids[3]]
    hourly = await get_json(ds, "/log/cost_per_hour.json?_shape=array")
    assert sum(r["calls"] for r in hourly) == 8
    latency = await get_json(ds, "/log/latency_by_model.json?days=7&_shape=array")
    assert {r["model"]: r["calls"] for r in latency}["gpt-4o-mini"] == 2


async def test_dashboard(ds: Datasette, ids: list[str], log_db: Path) -> None:
    response = await ds.client.get("/-/httptrack")
    assert response.status_code == 200
    page = response.text
    with httptrack.open_log(log_db) as log:
        totals = log.totals()
        (day,) = log.stats(by="day")
    assert re.search(r'<div class="label">Calls</div><div class="value">8</div>', page)
    assert re.search(r'<div class="label">Errors</div><div class="value">2 \(25.0%\)</div>', page)
    # Charts are inline SVG, a <title> on every bar with its figure.
    assert page.count('<svg class="httptrack-chart"') == 4
    assert f"<title>{day['day']}: $" in page
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "llama3.2", "nomic-embed-text"):
        assert f"<title>{model}, input tokens: " in page
    assert "<title>bob, cost: $" in page
    assert f"{totals['calls']}" in page
    everything = await ds.client.get("/-/httptrack?days=0")
    assert everything.status_code == 200 and "Everything recorded." in everything.text
    assert (await ds.client.get("/-/httptrack?db=nope")).status_code == 404
    home = (await ds.client.get("/")).text
    assert 'href="/-/httptrack"' in home  # in the menu


async def test_dashboard_shows_limits(log_db: Path, ids: list[str]) -> None:
    """Limits in use: the dashboard lists their counters; refusals and alerts are a table."""
    import httpx2
    import openai

    from httptrack._fake import mock_transport

    page = (await make_datasette(log_db).client.get("/-/httptrack")).text
    assert "Limits and budgets" not in page  # none used yet
    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=log_db, cache=False, limits="requests=1/day by user"
    )
    client = openai.OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
    with httptrack.attribute(user="zoe"):
        client.models.list()
        with pytest.raises(openai.RateLimitError):
            client.models.list()
    httptrack.flush()
    ds = make_datasette(log_db)
    page = (await ds.client.get("/-/httptrack")).text
    assert '<h2 id="limits">Limits and budgets</h2>' in page
    assert re.search(
        r"<td>requests=1/day by user</td><td>user=zoe</td><td>1</td><td>0</td><td>1</td><td>100%</td>", page
    )
    events = await get_json(ds, "/log/limit_events.json?_shape=array")
    assert [e["kind"] for e in events] == ["exhausted", "blocked", "threshold", "threshold"]  # newest first
    tables = (await ds.client.get("/log")).text
    assert "limit_events" in tables and "limit_meta" not in tables  # the key salt's table is hidden


async def test_ui_reads_alongside_a_live_writer(ds: Datasette, ids: list[str], log_db: Path) -> None:
    """The app keeps writing while the UI reads: datasette sees new calls (not immutable)
    and never opens a connection that could write."""
    writer = sqlite3.connect(log_db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the writer holds the write lock ...
        writer.execute("UPDATE calls SET user = 'dave' WHERE id = ?", [ids[0]])
        data = await get_json(ds, "/log/calls.json?_shape=array&user=dave")
        assert data == []  # ... and the UI still reads, the last committed state
        writer.execute("COMMIT")
    finally:
        writer.close()
    data = await get_json(ds, "/log/calls.json?_shape=array&user=dave")
    assert [r["id"] for r in data] == [ids[0]]
    db = ds.get_database("log")
    assert db.is_mutable and db._write_connection is None


async def test_plain_datasette_gets_the_views(log_db: Path, ids: list[str]) -> None:
    """``datasette "$(httptrack path)"`` without httptrack's plugin: the views live in the
    database."""
    registered = pm.is_registered(_datasette)
    if registered:
        pm.unregister(_datasette)
    try:
        plain = Datasette([str(log_db)])
        data = await get_json(plain, "/log/cost_by_user.json?_shape=array")
        assert {r["user"]: r["calls"] for r in data} == {"alice": 3, "bob": 3, "carol": 2}
        assert (await plain.client.get("/-/httptrack")).status_code == 404
    finally:
        if registered:
            pm.register(_datasette, name="httptrack")


def test_datasette_plugin_only_touches_call_logs(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE calls (request_body TEXT)")
    conn.close()
    assert not _datasette.is_call_log(str(other))
    assert not _datasette.is_call_log(str(tmp_path / "missing.db"))


@pytest.mark.parametrize(
    ("q", "picked"),
    [
        ("shipping", [3]),
        ("gpt-4o", []),  # FTS5 syntax: a column filter "gpt" minus "4o" (an error), now words
        ("AND", []),  # an FTS5 operator alone
        ('foo"', []),  # an unbalanced quote
        ('capital France"', [0]),
        ('"shipping delays" winter', [3]),
        ("umbrel*", [5, 2]),
        ("", []),
    ],
)
async def test_search_query_takes_any_text(ds: Datasette, ids: list[str], q: str, picked: list[int]) -> None:
    from urllib.parse import urlencode

    response = await ds.client.get("/log/search.json?" + urlencode({"q": q, "_shape": "array"}))
    assert response.status_code == 200, response.text[:300]
    assert [r["id"] for r in response.json()] == [ids[i] for i in picked]


async def test_plain_datasette_skips_facet_suggestions_on_a_call_log(log_db: Path, ids: list[str]) -> None:
    """Facet suggestions try every column of ``calls`` (seconds on a million calls):
    the plugin turns them off where a call log is attached, as ``httptrack ui`` does."""
    make_datasette(log_db)  # registers the plugin, as the entry point does for plain datasette
    other = log_db.parent / "other.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE pets (name TEXT, kind TEXT)")
        conn.executemany("INSERT INTO pets VALUES (?, ?)", [("a", "cat"), ("b", "cat"), ("c", "dog")])
    conn.close()
    alone = Datasette([str(other)])
    data = await get_json(alone, "/other/pets.json")
    assert alone.setting("suggest_facets") is True
    assert [f["name"] for f in data["suggested_facets"]] == ["kind"]

    plain = Datasette([str(log_db)])
    data = await get_json(plain, "/log/calls.json")
    assert plain.setting("suggest_facets") is False
    assert data["suggested_facets"] == []
    assert len(data["rows"]) == 8


# -- facets from the rollups ----------------------------------------------------------------

FACET_COLUMNS = ("provider", "model", "user", "service", "status")


def _insert_calls(conn: sqlite3.Connection, rng: Any, first: int, n: int, days: list[str]) -> None:
    """``n`` calls with the facet columns varied: NULL and '' among the values, a long tail of
    users (more than a facet shows), a requested model unlike the one that answered."""
    users = [f"user-{i:02d}" for i in range(40)]
    models = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "llama3.2"]
    for i in range(first, first + n):
        model = rng.choice([*models, None, ""])
        conn.execute(
            "INSERT INTO calls (id, started_at, provider, operation, model, response_model, status, "
            "cached, user, service, request_body, response_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                f"call-{i:05d}",
                f"{rng.choice(days)}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.000Z",
                rng.choice(["openai", "openai", "anthropic", "ollama", None]),
                "chat",
                model,
                rng.choice([None, f"{model}-2026-01-01", "answering-model"]) if model else None,
                rng.choice(["success", "success", "success", "error", None]),
                rng.choice([0, 1]),
                rng.choice([*users[: rng.choice([5, 40])], None, None, ""]),
                rng.choice(["api", "batch", "web", None, ""]),
                json.dumps({"model": model, "messages": [{"role": "user", "content": "a question"}]}),
                rng.choice(["umbrellas for the winter", "a refund policy", "the capital of France"]),
            ],
        )


@pytest.fixture
def varied_log(tmp_path: Path) -> Path:
    """A call log over several days, with 150 calls past the rollups' bookmark (written after
    the last roll-up): some on days the rollup has, some on a day it has not, a user and
    values it has never seen."""
    import random

    from httptrack.log import _rollup, _views
    from httptrack.log import _sqlite as _store

    path = tmp_path / "log.db"
    conn = _store.connect(path)
    _store.migrate(conn)
    rng = random.Random(20260315)
    _insert_calls(conn, rng, 0, 600, [f"2026-03-{d:02d}" for d in range(1, 7)])
    _rollup.roll_up_new_rows(conn)
    _insert_calls(conn, rng, 600, 150, ["2026-03-05", "2026-03-06", "2026-03-07"])
    conn.executemany(
        "INSERT INTO calls (id, started_at, provider, model, user, status) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (f"late-{i}", "2026-03-07T10:00:00.000Z", "mistral", "mistral-large", "zed", "success")
            for i in range(60)
        ],
    )
    _views.index_new_rows(conn)  # searchable, but not rolled up
    assert _rollup.bookmark(conn) == _rollup.detail_bookmark(conn) == 600
    conn.close()
    return path


def _plain_facets(metadata_facets: list[Any]) -> list[Any]:
    """The calls table's facets as datasette's own types (``column``, ``date``)."""
    plain: list[Any] = []
    for facet in metadata_facets:
        ((kind, column),) = facet.items()
        plain.append(column if kind == "httptrack_column" else {"date": column})
    return plain


class DatasettesOwn:
    """The same log and table settings in datasette without httptrack's plugin: its
    ``ColumnFacet`` and ``DateFacet`` on every facet, the reference to match."""

    def __init__(self, path: Path) -> None:
        import copy

        from httptrack._datasette._metadata import SETTINGS, database_metadata

        metadata = copy.deepcopy(database_metadata())
        calls = metadata["tables"]["calls"]
        calls["facets"] = _plain_facets(calls["facets"])
        assert calls["facets"] == ["provider", "model", "user", "service", "status", {"date": "started_at"}]
        self.ds = Datasette([str(path)], settings=dict(SETTINGS), metadata={"databases": {"log": metadata}})

    async def get(self, path: str) -> Any:
        registered = pm.is_registered(_datasette)
        if registered:
            pm.unregister(_datasette)
        try:
            return await self.ds.client.get(path)
        finally:
            if registered:
                pm.register(_datasette, name="httptrack")


def _facets_by_sql(path: Path, where: str = "1", size: int = 30) -> dict[str, Any]:
    """Each facet's (value, count) rows and whether it is truncated, counted with SQL."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for name, expr in [*((c, f'"{c}"') for c in FACET_COLUMNS), ("started_at", "date(started_at)")]:
            counted = conn.execute(
                f"SELECT {expr}, count(*) FROM calls WHERE ({where}) AND {expr} IS NOT NULL "
                f"GROUP BY {expr} ORDER BY count(*) DESC, {expr} LIMIT {size + 1}"
            ).fetchall()
            found[name] = (counted[:size], len(counted) > size)
        return found
    finally:
        conn.close()


def _counted(facet_results: dict[str, Any]) -> dict[str, Any]:
    return {
        name: ([(v["value"], v["count"]) for v in f["results"]], f["truncated"])
        for name, f in facet_results.items()
    }


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("", "1"),  # the whole table: from the rollups
        ("?_facet_size=5", "1"),
        ("?_facet_size=max", "1"),
        ("?_sort=provider&_size=10", "1"),
        ("?status=success", "status = 'success'"),  # filtered: datasette's SQL
        ("?user=user-03&provider=openai", "user = 'user-03' AND provider = 'openai'"),
        ("?started_at__date=2026-03-07", "date(started_at) = '2026-03-07'"),
        ("?user=", "user = ''"),
        ("?_search=umbrellas", "response_text LIKE '%umbrellas%'"),
        # Filtered on the detail rollup's columns: provider, model, status, day from it.
        ("?provider=openai", "provider = 'openai'"),
        ("?status=error&provider=openai", "status = 'error' AND provider = 'openai'"),
        ("?model=gpt-4o&_facet_size=2", "model = 'gpt-4o'"),
        ("?provider=mistral", "provider = 'mistral'"),  # only past the bookmark
        (
            "?started_at__date=2026-03-05&status=success",
            "date(started_at) = '2026-03-05' AND status = 'success'",
        ),
        ("?cached=1&operation=chat", "cached = 1 AND operation = 'chat'"),
        ("?cached__exact=0&status=error", "cached = 0 AND status = 'error'"),
        # Filters it cannot apply: every facet from the calls, grouped by +column.
        ("?model=", "model = ''"),
        ("?cached=01", "cached = 1"),
        ("?service=web", "service = 'web'"),
        ("?provider__not=openai", "provider != 'openai'"),
        ("?provider=openai&_search=umbrellas", "provider = 'openai' AND response_text LIKE '%umbrellas%'"),
        ("?status=error&_where=latency_ms+is+null", "status = 'error' AND latency_ms IS NULL"),
    ],
)
async def test_facets_are_datasettes_own(varied_log: Path, query: str, where: str) -> None:
    """The calls page's facets (counts, order, truncation, links, selected values) are what
    datasette's own facets give on the same data, from the rollups or not."""
    ui = make_datasette(varied_log)
    ours = (await get_json(ui, f"/log/calls.json{query}"))["facet_results"]
    size = 5 if "_facet_size=5" in query else 2 if "_facet_size=2" in query else 30
    size = 1000 if "_facet_size=max" in query else size
    assert _counted(ours) == _facets_by_sql(varied_log, where, size)
    reference = DatasettesOwn(varied_log)
    response = await reference.get(f"/log/calls.json{query}")
    assert response.status_code == 200
    assert ours == response.json()["facet_results"]  # toggle URLs, selected, hideable, type ...

    def facet_html(page: str) -> str:
        found = re.search(r'<div class="facet-results">.*?\n</div>', page, re.S)
        assert found, page[:300]
        return found.group(0)

    page = (await ui.client.get(f"/log/calls{query}")).text
    reference_page = (await reference.get(f"/log/calls{query}")).text
    assert facet_html(page) == facet_html(reference_page)


async def test_facets_read_the_rollups_only_where_they_can(varied_log: Path) -> None:
    """Unfiltered, the counts come from the rollups (plus the calls past their bookmark);
    filtered on the detail rollup's columns, the provider, model, status and day facets
    from it; otherwise from the calls. Shown by making the rollups wrong on purpose."""
    ui = make_datasette(varied_log)
    before = _counted((await get_json(ui, "/log/calls.json"))["facet_results"])
    detail_page = "/log/calls.json?operation=chat&cached__exact=1"
    detail = _counted((await get_json(ui, detail_page))["facet_results"])
    pages = [
        "/log/calls.json?cached=01",
        "/log/calls.json?user=user-03",
        "/log/calls.json?operation=chat&_search=a",
    ]
    filtered = [(await get_json(ui, page))["facet_results"] for page in pages]
    conn = sqlite3.connect(varied_log)
    with conn:  # 1000 more ollama calls and llama3.2 requests, on the first day
        conn.execute(
            "UPDATE calls_rollup SET calls = calls + 1000 "
            "WHERE dim = 'provider' AND value = 'ollama' AND day = '2026-03-01'"
        )
        key = "day, provider, model, response_model, operation, status, cached"
        conn.execute(
            f"UPDATE calls_rollup_detail SET calls = calls + 1000 WHERE ({key}) = "
            f"(SELECT {key} FROM calls_rollup_detail WHERE model = 'llama3.2' AND cached = '1' LIMIT 1)"
        )
        (provider, status) = conn.execute(
            "SELECT provider, status FROM calls_rollup_detail WHERE calls > 1000"
        ).fetchone()
    conn.close()
    after = _counted((await get_json(ui, "/log/calls.json"))["facet_results"])
    assert after["provider"][0][0] == ("ollama", dict(before["provider"][0])["ollama"] + 1000)
    assert dict(after["model"][0])["llama3.2"] == dict(before["model"][0])["llama3.2"] + 1000
    assert after["user"] == before["user"] and after["started_at"] == before["started_at"]
    detail_after = _counted((await get_json(ui, detail_page))["facet_results"])
    assert dict(detail_after["model"][0])["llama3.2"] == dict(detail["model"][0])["llama3.2"] + 1000
    assert (
        sum(n for _, n in detail_after["started_at"][0]) == sum(n for _, n in detail["started_at"][0]) + 1000
    )
    if provider:
        assert dict(detail_after["provider"][0])[provider] == dict(detail["provider"][0])[provider] + 1000
    if status:
        assert dict(detail_after["status"][0])[status] == dict(detail["status"][0])[status] + 1000
    assert detail_after["user"] == detail["user"] and detail_after["service"] == detail["service"]
    assert [(await get_json(ui, page))["facet_results"] for page in pages] == filtered
    # Filtered by a user (or a service): every facet but the day's from calls_rollup_combo.
    conn = sqlite3.connect(varied_log)
    with conn:
        key = '"user", day, service, provider, model, response_model, operation, status, cached'
        conn.execute(
            f"UPDATE calls_rollup_combo SET calls = calls + 1000 WHERE ({key}) = "
            f"(SELECT {key} FROM calls_rollup_combo WHERE \"user\" = 'user-03' "
            "AND provider != '' AND model != '' AND status != '' AND service != '' LIMIT 1)"
        )
    conn.close()
    user_before = _counted(filtered[1])
    user_after = _counted((await get_json(ui, pages[1]))["facet_results"])
    for facet in ("provider", "model", "status", "user", "service", "started_at"):
        assert sum(n for _, n in user_after[facet][0]) == sum(n for _, n in user_before[facet][0]) + 1000, (
            facet
        )


async def test_facets_of_a_lagging_rollup(varied_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollup too far behind (here: more than 100 calls) is not read; datasette's SQL is."""
    from httptrack._datasette import _facets

    monkeypatch.setattr(_facets, "MAX_LAG", 100)  # the log has 210 calls past the bookmarks
    conn = sqlite3.connect(varied_log)
    with conn:
        conn.execute("UPDATE calls_rollup SET calls = calls + 1000")  # wrong, and never read
    conn.close()
    ui = make_datasette(varied_log)
    assert _counted((await get_json(ui, "/log/calls.json"))["facet_results"]) == _facets_by_sql(varied_log)


@pytest.mark.parametrize("dropped", ["detail", "all"])
async def test_facets_of_a_log_without_rollups(varied_log: Path, dropped: str) -> None:
    """An older log (no detail rollup, or none at all), opened read-only: the facets are
    counted from the calls, the same as datasette's."""
    conn = sqlite3.connect(varied_log)
    tables = ["calls_rollup_detail", "calls_rollup_detail_latency"]
    if dropped == "all":
        tables += ["calls_rollup", "calls_rollup_latency", "httptrack_state"]
    with conn:
        for table in tables:
            conn.execute(f"DROP TABLE {table}")
    conn.close()
    ui = make_datasette(varied_log)
    ours = (await get_json(ui, "/log/calls.json"))["facet_results"]
    assert _counted(ours) == _facets_by_sql(varied_log)
    assert ours == (await DatasettesOwn(varied_log).get("/log/calls.json")).json()["facet_results"]


async def test_facet_asked_for_in_the_url(varied_log: Path) -> None:
    """``?_facet_httptrack_column=service`` works like ``?_facet=service``, and its link
    removes it."""
    ui = make_datasette(varied_log)
    data = await get_json(ui, "/log/calls.json?_facet_httptrack_column=operation")
    facet = data["facet_results"]["operation"]
    assert facet["hideable"] and facet["type"] == "column"
    assert [(v["value"], v["count"]) for v in facet["results"]] == [("chat", 750)]
    assert facet["toggle_url"] == "/log/calls.json"


@pytest.fixture
def tied_log(tmp_path: Path) -> Path:
    """A log where every facet's values tie: 12 models, users, services and days with 3
    failed calls each (and 1 that succeeded), written in the reverse of their order, some
    past the rollups' bookmark; the facets show fewer values than there are."""
    from httptrack.log import _rollup
    from httptrack.log import _sqlite as _store

    path = tmp_path / "log.db"
    conn = _store.connect(path)
    _store.migrate(conn)

    def insert(rounds: range) -> None:
        for r in rounds:
            for k in reversed(range(12)):
                conn.execute(
                    "INSERT INTO calls (id, started_at, provider, model, status, cached, user, service, "
                    "operation) VALUES (?, ?, ?, ?, ?, 0, ?, ?, 'chat')",
                    [
                        f"call-{r}-{k:02d}",
                        f"2026-03-{k + 1:02d}T12:00:00.000Z",
                        f"provider-{k:02d}",
                        f"model-{k:02d}" if k else "",
                        "success" if r == 3 else "error",
                        f"user-{k:02d}",
                        f"service-{k:02d}",
                    ],
                )

    insert(range(2))
    _rollup.roll_up_new_rows(conn)
    insert(range(2, 4))
    conn.close()
    return path


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("?status=error&_facet_size=5", "status = 'error'"),  # from the detail rollup and the calls
        ("?status=error&cached=0&_facet_size=5", "status = 'error' AND cached = 0"),
        ("?status__not=success&_facet_size=5", "status != 'success'"),  # from the calls
        ("?status=error&_facet_size=12", "status = 'error'"),  # all of them: not truncated
        ("?_facet_size=5", "1"),
    ],
)
async def test_facets_break_ties_as_datasette_does(tied_log: Path, query: str, where: str) -> None:
    """Values with the same count are ordered by value and cut at the facet size exactly
    as datasette's own facets do, whichever SQL counted them."""
    ui = make_datasette(tied_log)
    ours = (await get_json(ui, f"/log/calls.json{query}"))["facet_results"]
    size = int(query.rsplit("=", 1)[1])
    expected = _facets_by_sql(tied_log, where, size)
    assert _counted(ours) == expected
    for name in ("provider", "user", "service", "started_at"):
        values, truncated = expected[name]
        assert [n for _, n in values] == [values[0][1]] * size and truncated == (size < 12), name
    assert expected["model"][0][0] == ("", 3 if "status" in query else 4)  # '' is a value
    assert ours == (await DatasettesOwn(tied_log).get(f"/log/calls.json{query}")).json()["facet_results"]


# -- the pages on a varied log (what the browser tests see, checked as HTML and JSON) ---------


@pytest.fixture
def ui_ds(ui_log: Any) -> Datasette:
    return make_datasette(ui_log.db)


def copy_log(source: Path, target: Path) -> Path:
    """A copy of a log (with what its write-ahead log holds) to change in a test."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return target


@pytest.mark.parametrize("days", ["abc", "-1", "1.5", "7d", " "])
async def test_dashboard_refuses_a_bad_period(ui_ds: Datasette, days: str) -> None:
    response = await ui_ds.client.get(f"/-/httptrack?days={days}")
    assert response.status_code == 400
    assert "days" in html.unescape(response.text) and "Traceback" not in response.text


async def test_dashboard_takes_any_long_period_as_everything(ui_ds: Datasette) -> None:
    for days in ("99999999", str(10**30)):
        response = await ui_ds.client.get(f"/-/httptrack?days={days}")
        assert response.status_code == 200 and "Everything recorded." in response.text
    response = await ui_ds.client.get("/-/httptrack?by=colour")
    assert response.status_code == 400 and "by must be one of" in html.unescape(response.text)


async def test_dashboard_rolls_the_rest_up_and_never_hides_errors(
    ui_ds: Datasette, ui_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The most expensive groups by name, and the ones failing most; the rest in one line
    whose figures (errors too) add up with them to the total."""
    from httptrack._datasette import _dashboard

    monkeypatch.setattr(_dashboard, "TOP", 1)
    page = (await ui_ds.client.get("/-/httptrack?days=0&by=requested_model")).text
    shown = re.findall(
        r'<tr data-group="([^"]*)">\s*<td>(?:<a [^>]*>)?([^<]+)(?:</a>)?</td>\s*<td>([\d,]+)</td>'
        r"<td[^>]*>([\d,]+)</td>",
        page,
    )
    with httptrack.open_log(ui_log.db) as log:
        groups = log.stats(by="requested_model")
        totals = log.totals()
    top, *rest = groups
    failing = max((g for g in rest if g["errors"]), key=lambda g: g["errors"])
    others = [g for g in rest if g is not failing]
    assert len(others) > 1 and any(g["errors"] for g in others)
    named = [g["requested_model"] for g in groups if g is top or g is failing]
    assert [label for _, label, _, _ in shown] == [*named, f"{len(others)} others"]
    *_, (_, _, calls, errors) = shown
    assert int(calls) == sum(g["calls"] for g in others)
    assert int(errors) == sum(g["errors"] for g in others)
    assert sum(int(c.replace(",", "")) for _, _, c, _ in shown) == totals["calls"]
    assert sum(int(e) for _, _, _, e in shown) == totals["errors"]


async def test_costs_are_money_in_views_and_decimals_in_csv(ui_ds: Datasette, ui_log: Any) -> None:
    from httptrack._format import money

    for view in ("cost_by_model", "cost_per_day", "errors", "cost_for_user?user=carol"):
        page = (await ui_ds.client.get(f"/log/{view}")).text
        assert not re.search(r">\s*-?\d+(\.\d+)?e-\d+\s*<", page), view  # no 4.9e-05 shown
    data = await get_json(ui_ds, "/log/cost_by_model.json?_shape=array")
    page = (await ui_ds.client.get("/log/cost_by_model")).text
    for r in data:
        if r["cost_usd"]:
            assert f">{money(r['cost_usd'])}</span>" in page
    tiny = [r for r in data if r["cost_usd"] and r["cost_usd"] < 1e-4]
    assert tiny and "e-" in repr(tiny[0]["cost_usd"])  # what Python writes for them
    for path in (
        "/log/cost_by_model.csv",
        "/log/calls.csv?_col=cost_usd&_size=max",
        "/log/cost_by_model.csv?_dl=1",
    ):
        response = await ui_ds.client.get(path)
        assert response.status_code == 200
        assert "e-0" not in response.text, path
        assert "content-length" not in response.headers or int(response.headers["content-length"]) == len(
            response.content
        )
    table = list(csv.reader(io.StringIO((await ui_ds.client.get("/log/cost_by_model.csv")).text)))
    written = {r[0]: r[table[0].index("cost_usd")] for r in table[1:]}
    assert written == {
        r["model"]: "" if r["cost_usd"] is None else format(Decimal(repr(r["cost_usd"])), "f") for r in data
    }


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_decimal_csv_keeps_quoted_text_and_fields_cut_across_chunks(size: int) -> None:
    from httptrack._datasette._csv import DecimalCsv

    text = (
        b'id,cost,text\r\na,4.9e-05,"1e-05, said ""x""\r\nand 2E+3"\r\nb,1e-06,plain 3e-05\r\n'
        b'c,"2e-07",12\r\nd,-1.5e-10,\r\n'
    )
    rewriter = DecimalCsv()
    out = b"".join(rewriter.feed(text[i : i + size]) for i in range(0, len(text), size)) + rewriter.feed(
        b"", final=True
    )
    assert out.decode() == (
        'id,cost,text\r\na,0.000049,"1e-05, said ""x""\r\nand 2E+3"\r\nb,0.000001,plain 3e-05\r\n'
        'c,"2e-07",12\r\nd,-0.00000000015,\r\n'
    )


async def test_internal_tables_are_hidden(ui_ds: Datasette) -> None:
    from httptrack._datasette._metadata import INTERNAL_TABLES

    data = await get_json(ui_ds, "/log.json")
    hidden = {t["name"] for t in data["tables"] if t["hidden"]}
    shown = [t["name"] for t in data["tables"] if not t["hidden"]]
    assert set(INTERNAL_TABLES) <= hidden and shown == ["calls"]
    page = (await ui_ds.client.get("/log")).text
    assert 'class="httptrack-dashboard" href="/-/httptrack?db=log"' in page
    assert 'class="httptrack-calls" href="/log/calls"' in page
    home = (await ui_ds.client.get("/")).text
    assert 'class="httptrack-dashboard"' in home


async def test_record_of_every_kind_of_call(ui_ds: Datasette, ui_log: Any) -> None:
    """Every recorded call opens as a record (no error on any shape), with its answer."""
    for call in ui_log.all_ids:
        response = await ui_ds.client.get(f"/log/calls/{call}")
        assert response.status_code == 200, call
        assert 'id="status"' in response.text and 'id="conversation"' in response.text
    embedding = rows(ui_log.db, "model = 'text-embedding-3-small'")[0]
    page = html.unescape((await ui_ds.client.get(f"/log/calls/{embedding['id']}")).text)
    assert "ht-role-input" in page and "storm umbrella" in page and "golf umbrella" in page
    # ?_all_columns=1: datasette's own row, every column.
    full = (await ui_ds.client.get(f"/log/calls/{embedding['id']}?_all_columns=1")).text
    assert 'id="status"' not in full and all(f'data-column="{c}"' in full for c in ("cache_key", "pid"))
    assert (await ui_ds.client.get("/log/calls/01NOSUCHCALL0000000000000")).status_code == 404


async def test_record_lists_the_same_keys_answers_where_the_key_is_indexed(
    ui_log: Any, tmp_path: Path
) -> None:
    hit = ui_log.ids["cache_hit"]
    page = (await make_datasette(ui_log.db).client.get(f"/log/calls/{hit}")).text
    assert 'id="same-key-link"' in page and 'id="same-prompt"' not in page  # no index: a link only
    indexed = copy_log(ui_log.db, tmp_path / "indexed.db")
    conn = sqlite3.connect(indexed)
    with conn:
        conn.execute("CREATE INDEX idx_calls_cache_key ON calls (cache_key)")
    conn.close()
    page = (await make_datasette(indexed).client.get(f"/indexed/calls/{hit}")).text
    same = page.split('id="same-prompt"', 1)[1].split("</table>", 1)[0]
    assert f'href="/indexed/calls/{ui_log.ids["first_turn"]}"' in same and "(this call)" in same


def test_conversations_of_every_shape() -> None:
    from httptrack.providers._conversation import request_conversation, response_tool_calls, tool_names

    def shown(body: Any) -> list[tuple[str, list[tuple[str, str, str]]]]:
        return [
            (m.role, [(p.kind, p.name, p.text) for p in m.parts])
            for m in request_conversation(json.dumps(body))
        ]

    anthropic = {
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "lookup", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image", "source": {}}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}]},
        ],
    }
    assert shown(anthropic) == [
        ("system", [("text", "", "Be brief.")]),
        ("user", [("text", "", "Hi"), ("image", "", "image")]),
        ("assistant", [("tool_call", "lookup", '{\n  "q": 1\n}')]),
        ("user", [("tool_result", "t1", "found")]),
    ]
    assert tool_names(json.dumps(anthropic)) == ["lookup"]
    responses_api = {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "name": "weather", "arguments": "{}", "call_id": "c1"},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        ],
        "tools": [{"type": "function", "name": "weather"}],
    }
    assert shown(responses_api) == [
        ("system", [("text", "", "Be brief.")]),
        ("user", [("text", "", "Weather?")]),
        ("assistant", [("tool_call", "weather", "{}")]),
        ("tool", [("tool_result", "c1", "rain")]),
    ]
    gemini = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
    }
    assert shown(gemini) == [
        ("system", [("text", "", "Be brief.")]),
        ("user", [("text", "", "Hi")]),
        ("assistant", [("tool_call", "f", "{}")]),
    ]
    assert tool_names(json.dumps(gemini)) == ["f"]
    ollama = {"messages": [{"role": "user", "content": "What is this?", "images": ["aGk="]}]}
    assert shown(ollama) == [("user", [("text", "", "What is this?"), ("image", "", "1 image(s)")])]
    assert shown({"prompt": "Once upon"}) == [("user", [("text", "", "Once upon")])]
    assert shown({"model": "m", "input": ["a", "b"]}) == [("input", [("text", "", "a"), ("text", "", "b")])]
    for odd in ("not json", "[1, 2]", json.dumps({"messages": "x"}), json.dumps({"messages": [1, None]}), ""):
        assert request_conversation(odd) == []
    anthropic_answer = {
        "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "name": "f", "input": {}}]
    }
    assert [(p.kind, p.name) for p in response_tool_calls(json.dumps(anthropic_answer))] == [
        ("tool_call", "f")
    ]
    assert response_tool_calls("data: {}\n\n") == []


async def test_other_databases_keep_datasettes_own_pages(ui_log: Any, tmp_path: Path) -> None:
    """The plugin's row and table templates stand in for datasette's only on a call log."""
    other = tmp_path / "pets.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT, cost_usd REAL)")
        conn.execute("INSERT INTO pets VALUES (1, 'Cleo', 4.9e-05)")
    conn.close()
    ds = make_datasette(ui_log.db)
    ds.add_database(Database(ds, path=str(other)), name="pets")
    table = (await ds.client.get("/pets/pets")).text
    assert 'class="rows-and-columns"' in table and "calls-list" not in table and "Cleo" in table
    assert "4.9e-05" in table  # not a call log: its figures are left as they are
    record = (await ds.client.get("/pets/pets/1")).text
    assert 'class="rows-and-columns"' in record and 'id="status"' not in record
    assert "4.9e-05" in (await ds.client.get("/pets/pets.csv")).text
    calls = (await ds.client.get("/log/calls")).text
    assert 'id="calls-list"' in calls


async def test_a_call_with_a_deeply_nested_body_has_a_page(tmp_path: Path) -> None:
    """A body nested too deeply for json.loads (a row is still recorded for it) must not
    make its record page an error: it is shown as stored."""
    import httpx

    deep = "[" * 100_000 + "]" * 100_000
    request = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "x": ' + deep + "}"
    answer = (
        '{"id": "c", "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", '
        '"content": "yo"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}, '
        '"y": ' + deep + "}"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answer.encode(), headers={"content-type": "application/json"})

    db = tmp_path / "deep.db"
    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        response = client.post(
            "https://api.openai.com/v1/chat/completions",
            content=request.encode(),
            headers={"content-type": "application/json"},
        )
    assert httptrack.flush(10)
    page = await make_datasette(db).client.get(f"/deep/calls/{response.headers['x-httptrack-call-id']}")
    assert page.status_code == 200, page.text[:300]
    assert "gpt-4o-mini" in page.text


async def test_compressed_bodies_read_as_text_in_every_output(tmp_path: Path) -> None:
    """Long bodies are stored as zstd frames (log/_bodies); every way datasette gives a call
    out shows them as the text they are, never as base64 or a blob link: the table's JSON
    and CSV, a call's JSON, custom SQL (under another name too), and plain datasette.
    ``httptrack_body()`` gives SQL the text to compute with."""
    import httpx2
    import openai

    from httptrack._fake import mock_transport

    prompt = "Tell me about the zeppelin. " + " ".join(f"topic{i % 50} detail{i % 7}" for i in range(400))
    db = tmp_path / "log.db"
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False)
    client = openai.OpenAI(
        api_key="sk-test-not-real",
        base_url="https://api.openai.com/v1",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    assert httptrack.flush(10)
    conn = sqlite3.connect(db)
    try:
        ((call_id, kinds),) = conn.execute(
            "SELECT id, typeof(request_body) || ',' || typeof(response_body) FROM calls"
        ).fetchall()
    finally:
        conn.close()
    assert kinds == "blob,blob"  # what the outputs below must not show
    body = rows(db)[0]
    request_body, response_body = body["request_body"], body["response_body"]
    assert prompt in request_body

    def no_blobs(text: str) -> None:
        assert "$base64" not in text and "Binary" not in text and ".blob" not in text

    for ds in (make_datasette(db), Datasette([str(db)])):
        table = await get_json(ds, "/log/calls.json?_shape=array")
        assert [(r["request_body"], r["response_body"]) for r in table] == [(request_body, response_body)]
        everything = (
            await ds.client.get("/log/calls.json?_shape=array&_col=request_body&_col=response_body")
        ).text
        no_blobs(everything)
        row = await get_json(ds, f"/log/calls/{call_id}.json?_shape=array")
        assert [(r["request_body"], r["response_body"]) for r in row] == [(request_body, response_body)]
        response = await ds.client.get("/log/calls.csv?_size=max")
        assert response.status_code == 200
        (written,) = list(csv.DictReader(io.StringIO(response.text)))
        assert (written["request_body"], written["response_body"]) == (request_body, response_body)
        streamed = await ds.client.get("/log/calls.csv?_stream=on")
        (written,) = list(csv.DictReader(io.StringIO(streamed.text)))
        assert written["request_body"] == request_body
        query = await get_json(
            ds,
            "/log.json?_shape=array&sql="
            + "select request_body as prompt, length(httptrack_body(response_body)) as n from calls",
        )
        assert query == [{"prompt": request_body, "n": len(response_body)}]
        page = (await ds.client.get(f"/log/calls/{call_id}?_all_columns=1")).text
        no_blobs(page)
        assert "topic49 detail0" in page
