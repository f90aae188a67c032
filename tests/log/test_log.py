"""``httptrack.open_log()``: reading the call log from Python, on a database filled through
the transport (see ``recorded_log``), checked against the rows themselves."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from recorded_log import (
    age_calls,
    check_stats,
    record_calls,
    record_overlapping_calls,
    rows,
    unique_prefix,
)

import httptrack
from httptrack.log._reader import fts_query, parse_when
from httptrack.log._sqlite import SCHEMA_VERSION


@pytest.fixture
def ids(db: Path) -> list[str]:
    return record_calls(db)


def test_calls_are_records_newest_first(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log:
        records = list(log.calls())
        assert [r.id for r in records] == ids[::-1]
        assert isinstance(records[0], httptrack.CallRecord)
        first = records[-1]
        raw = rows(db, "id = ?", (ids[0],))[0]
        assert (first.provider, first.model, first.input_tokens, first.output_tokens, first.cost_usd) == (
            "openai",
            "gpt-4o-mini",
            raw["input_tokens"],
            raw["output_tokens"],
            raw["cost_usd"],
        )
        assert (first.user, first.service, first.session) == ("alice", "summarizer", "s-1")
        assert [r.id for r in log.calls(newest_first=False, limit=2)] == ids[:2]
        assert [r.id for r in log.calls(limit=3)] == ids[::-1][:3]


@pytest.mark.parametrize(
    ("filters", "picked"),
    [
        ({"provider": "anthropic"}, [2, 3]),
        ({"provider": ["anthropic", "ollama"]}, [2, 3, 4, 5]),
        ({"user": "alice"}, [0, 1, 6]),
        ({"service": "support"}, [2, 3]),
        ({"session": "s-1"}, [0, 1]),
        ({"status": "error"}, [6, 7]),
        ({"operation": "embeddings"}, [4]),
        ({"model": "claude-sonnet-4-6"}, [3]),
        ({"model": ["llama3.2", "missing-model"]}, [5, 6]),
        ({"user": "bob", "status": "error"}, [7]),
        ({"cached": True}, []),
        ({"cached": False}, [0, 1, 2, 3, 4, 5, 6, 7]),
        ({"query": "umbrellas"}, [2, 5]),
        ({"query": "refund umbrellas"}, [2]),
        ({"query": "Lyon"}, [1, 4]),  # a chat prompt and an embeddings input
        ({"query": '"shipping delays"'}, [3]),
        ({"query": "umbrel*"}, [2, 5]),
        ({"query": "user"}, []),  # a JSON key ("role": "user"), not prompt text
        ({"query": "what's \"this"}, []),  # not an FTS5 syntax error
        ({"query": "umbrellas", "user": "carol"}, [5]),
    ],
)
def test_filters(db: Path, ids: list[str], filters: dict[str, Any], picked: list[int]) -> None:
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(**filters)] == [ids[i] for i in reversed(picked)]
        assert log.count(**filters) == len(picked)
        assert [r["id"] for r in log.rows(newest_first=False, columns=["id"], **filters)] == [
            ids[i] for i in picked
        ]


def test_search_results_are_newest_first_by_start_time(db: Path) -> None:
    stream, call = record_overlapping_calls(db)
    by_start = [r["id"] for r in rows(db)]
    conn = sqlite3.connect(db)
    by_write = [r[0] for r in conn.execute("SELECT id FROM calls ORDER BY rowid")]
    conn.close()
    assert by_start == [stream, call] and by_write == [call, stream]
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="overlap")] == [call, stream]
        assert [r.id for r in log.calls(query="overlap", limit=1)] == [call]
        assert [r["id"] for r in log.rows(query="overlap", newest_first=False)] == [stream, call]
        assert [r["id"] for r in log.rows(query="overlap", newest_first=False, limit=1)] == [stream]
        assert [r.id for r in log.calls()] == [call, stream]  # as without a search


def test_since_and_until(db: Path, ids: list[str]) -> None:
    now = datetime.now(UTC)
    age_calls(
        db, {ids[0]: timedelta(days=10), ids[1]: timedelta(days=3), ids[2]: timedelta(hours=5)}, now=now
    )
    with httptrack.open_log(db) as log:
        assert {r.id for r in log.calls(since="7d")} == set(ids[1:])
        assert {r.id for r in log.calls(since="2h")} == set(ids[3:])
        assert {r.id for r in log.calls(until="1d")} == set(ids[:2])
        assert [r.id for r in log.calls(since="4d", until="4h")] == [ids[2], ids[1]]
        day = (now - timedelta(days=3)).strftime("%Y-%m-%d")
        assert [r.id for r in log.calls(since=day, until=f"{day}T23:59:59.999")] == [ids[1]]
        assert [r.id for r in log.calls(since=now - timedelta(days=4), until=now - timedelta(days=2))] == [
            ids[1]
        ]
        with pytest.raises(ValueError, match="not a time"):
            list(log.calls(since="yesterday"))
        with pytest.raises(TypeError, match="unknown filter"):
            list(log.calls(costs_more_than=1))  # type: ignore[call-arg]


def test_get_by_id_or_unique_prefix(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log:
        record = log.get(ids[3])
        assert record is not None and record.id == ids[3]
        assert record.response_text == "Hello! You said: Explain shipping delays in winter"
        got = log.get(ids[3].lower())
        assert got is not None and got.id == ids[3]
        prefix = unique_prefix(ids[3], ids)
        got = log.get(prefix)
        assert got is not None and got.id == ids[3]
        # The first characters (the time) are shared by calls made together: ambiguous.
        shared = ids[3][:6]
        assert sum(i.startswith(shared) for i in ids) > 1
        assert log.get(shared) is None
        assert log.get("0000000000") is None
        assert log.get("ABC") is None  # too short to be a prefix


def test_totals_match_the_rows(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log:
        totals = log.totals()
    check_stats(totals, rows(db))
    assert totals["calls"] == 8 and totals["errors"] == 2 and totals["error_rate"] == 0.25
    assert totals["unpriced"] == 0


@pytest.mark.parametrize("by", ["provider", "model", "user", "service", "operation", "status", "day"])
def test_breakdowns_match_the_rows(db: Path, ids: list[str], by: str) -> None:
    age_calls(db, {ids[0]: timedelta(days=2), ids[4]: timedelta(days=1)})
    all_rows = rows(db)
    key = {
        "model": lambda r: r["response_model"] or r["model"],
        "day": lambda r: r["started_at"][:10],
    }.get(by, lambda r: r[by])
    with httptrack.open_log(db) as log:
        groups = log.stats(by=by)
    assert sorted((g[by] for g in groups), key=str) == sorted({key(r) for r in all_rows}, key=str)
    for group in groups:
        check_stats(group, [r for r in all_rows if key(r) == group[by]])
    if by == "day":
        assert [g["day"] for g in groups] == sorted((g["day"] for g in groups), reverse=True)
    else:
        costs = [g["cost_usd"] or 0 for g in groups]
        assert costs == sorted(costs, reverse=True)
    with pytest.raises(ValueError, match="cannot group by"):
        log.stats(by="colour")


@pytest.mark.parametrize(
    ("by", "filters"),
    [
        (None, {}),
        ("model", {}),
        ("day", {"since": "2d"}),
        ("user", {"since": "36h", "until": "1h"}),
        (None, {"user": "bob"}),
        ("provider", {"provider": ["openai", "ollama"]}),
        ("model", {"provider": "openai"}),  # two dimensions: the detail rollup
        (None, {"model": "gpt-4o-mini", "since": "3d"}),
        ("service", {"status": "error"}),  # a user or service and another: calls_rollup_combo
        ("user", {"service": "support", "model": "gpt-4o-mini", "since": "36h"}),
        (None, {"query": "umbrellas"}),
        (None, {"cached": True}),
        (None, {"cached": False}),
        ("model", {"cached": False, "since": "36h"}),
        ("status", {"model": ["gpt-4o-mini", "llama3.2"]}),
        ("operation", {"provider": ["openai", "ollama"], "status": "success"}),
        ("day", {"provider": "anthropic", "until": "1h"}),
        ("provider", {"model": ["llama3.2", "missing-model"], "since": "2d", "until": "20h"}),
        ("model", {"status": "error", "operation": "chat"}),
        ("user", {"provider": "openai"}),
    ],
)
def test_rollups_and_calls_give_the_same_answers(
    db: Path, ids: list[str], by: str | None, filters: dict[str, Any]
) -> None:
    """The daily rollup answers what it can, the calls table the rest, and the partial days
    at the edges of a range and calls past the rollup's bookmark are added from the calls:
    every way must give what summing the matching rows gives."""
    now = datetime.now(UTC)
    age_calls(
        db,
        {
            ids[0]: timedelta(days=2, hours=1),
            ids[1]: timedelta(hours=40),
            ids[2]: timedelta(hours=30),
            ids[4]: timedelta(days=1),
        },
        now=now,
    )
    copy_call(db, ids[5], "01ZZZZZZZZZZZZZZZZZZZZZZZZ")  # written by something that does not roll up
    with httptrack.open_log(db) as log:
        plan = log._rollup_plan(by, filters)  # type: ignore[arg-type]
        involved = {k for k in filters if k not in ("since", "until")} | ({by} - {None, "day"})
        if "query" in involved:
            assert plan is None
        elif {"user", "service"} & involved and len(involved) > 1:  # the combination rollup
            assert plan is not None and plan.tables[0] == "calls_rollup_combo"
        elif len(involved) > 1 or "cached" in involved or "model" in filters:
            assert plan is not None and plan.tables[0] == "calls_rollup_detail"
        else:
            assert plan is not None and plan.tables[0] == "calls_rollup"
        matching = {r.id for r in log.calls(**filters)}
        got = log.stats(by=by, **filters)
        log._rolled_up = False  # the same question, summed from the calls alone
        assert log.stats(by=by, **filters) == got
    selected = [r for r in rows(db) if r["id"] in matching]
    assert len(selected) == sum(g["calls"] for g in got)
    key = {"model": lambda r: r["response_model"] or r["model"], "day": lambda r: r["started_at"][:10]}.get(
        by or "", lambda r: r[by] if by else None
    )
    for group in got:
        mine = [r for r in selected if key(r) == (group[by] if by else None)]
        if mine:
            check_stats(group, mine)
        else:  # nothing matched (no cache hits here): the empty totals
            assert by is None and group["calls"] == 0 and group["cost_usd"] is None


def copy_call(db: Path, call_id: str, new_id: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
        select = ", ".join("?" if c == "id" else f'"{c}"' for c in columns)
        conn.execute(f"INSERT INTO calls SELECT {select} FROM calls WHERE id = ?", [new_id, call_id])
    conn.close()


def test_stats_without_percentiles(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log:
        full = log.stats(by="user")
        lean = log.stats(by="user", percentiles=False)
    assert [g["p50_latency_ms"] for g in lean] == [None] * 3 == [g["p95_latency_ms"] for g in lean]
    strip = ("p50_latency_ms", "p95_latency_ms")
    assert [{k: v for k, v in g.items() if k not in strip} for g in lean] == [
        {k: v for k, v in g.items() if k not in strip} for g in full
    ]


def test_calls_past_the_rollup_bookmark_are_counted(db: Path, ids: list[str]) -> None:
    copy_call(db, ids[2], "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    with httptrack.open_log(db) as log:
        assert log.totals()["calls"] == 9
        assert {g["provider"]: g["calls"] for g in log.stats(by="provider")} == {
            "openai": 4,
            "anthropic": 3,
            "ollama": 2,
        }
        check_stats(log.totals(), rows(db))


def test_open_log_reads_without_writing(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log, pytest.raises(sqlite3.OperationalError, match="readonly"):
        log._conn.execute("DELETE FROM calls")
    assert len(rows(db)) == 8


def test_open_log_on_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        httptrack.open_log(tmp_path / "nothing.db")


def test_status(db: Path, ids: list[str]) -> None:
    with httptrack.open_log(db) as log:
        info = log.status()
    all_rows = rows(db)
    assert info["calls"] == 8
    assert (info["oldest"], info["newest"]) == (all_rows[0]["started_at"], all_rows[-1]["started_at"])
    assert info["schema_version"] == SCHEMA_VERSION and info["search_index"] is True
    assert info["size_bytes"] >= db.stat().st_size


def test_parse_when() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_when("2h", now=now) == "2026-03-10T10:00:00.000Z"
    assert parse_when("7d", now=now) == "2026-03-03T12:00:00.000Z"
    assert parse_when("1.5h", now=now) == "2026-03-10T10:30:00.000Z"
    assert parse_when("30m", now=now) == "2026-03-10T11:30:00.000Z"
    assert parse_when("1w", now=now) == "2026-03-03T12:00:00.000Z"
    assert parse_when("2026-01-31") == "2026-01-31T00:00:00.000Z"
    assert parse_when("2026-01-31T12:30") == "2026-01-31T12:30:00.000Z"
    assert parse_when("2026-01-31T12:30:00+02:00") == "2026-01-31T10:30:00.000Z"
    assert parse_when("2026-01-31T12:30:00Z") == "2026-01-31T12:30:00.000Z"
    assert parse_when(datetime(2026, 1, 31, 8)) == "2026-01-31T08:00:00.000Z"
    for bad in ("", "soon", "7 days", "-2h"):
        with pytest.raises(ValueError):
            parse_when(bad)


def test_fts_query_quotes_every_term() -> None:
    assert fts_query("refund policy") == '"refund" "policy"'
    assert fts_query('"shipping delays" winter') == '"shipping delays" "winter"'
    assert fts_query("umbrel*") == '"umbrel"*'
    assert fts_query('say "hi') == '"say" """hi"'
    assert fts_query("a OR b NOT c") == '"a" "OR" "b" "NOT" "c"'
    assert fts_query("   ") == ""


@pytest.mark.parametrize(
    ("by", "filters"),
    [
        ("model", {}),
        ("user", {"query": "umbrellas"}),
        ("requested_model", {"session": "s-1"}),
        ("day", {"query": "capital", "since": "2d"}),
        ("service", {"provider": "openai", "user": "alice"}),
    ],
)
def test_stats_and_totals_read_once_what_stats_and_totals_read_twice(
    db: Path, ids: list[str], by: str, filters: dict[str, Any]
) -> None:
    with httptrack.open_log(db) as log:
        totals, groups = log.stats_and_totals(by=by, **filters)
        assert groups == log.stats(by=by, **filters)
        assert totals == log.totals(**filters)
        assert sum(g["calls"] for g in groups) == totals["calls"]
