"""A call log written by the first schema (version 1) upgrades in place: nothing lost, and
it gains the search index, the daily rollups, the reporting views and their indexes. Reading
an old log never writes it: it is read as it is, with the same answers."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from recorded_log import (
    V2_OBJECTS,
    V3_OBJECTS,
    V4_OBJECTS,
    V5_OBJECTS,
    downgrade_to_v1,
    downgrade_to_v4,
    record_calls,
    rows,
)

import httptrack
from httptrack.log import _rollup, _views
from httptrack.log._sqlite import SCHEMA_VERSION, connect, migrate
from httptrack.record._writer import writer


def upgrade(db: Path) -> None:
    conn = connect(db)
    try:
        migrate(conn)
    finally:
        conn.close()


def schema_names(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_a_version_1_log_upgrades_in_place(db: Path) -> None:
    ids = record_calls(db)
    httptrack.flush()
    before = rows(db)
    with httptrack.open_log(db) as log:
        stats_before = log.stats(by="user")
    downgrade_to_v1(db)
    assert not V2_OBJECTS & schema_names(db)

    with httptrack.open_log(db) as log:  # reading an old log reads it as it is
        assert sorted(r.id for r in log.calls(query="umbrellas")) == sorted([ids[5], ids[2]])
        assert log.stats(by="user") == stats_before
        assert not log._rolled_up and not log._searchable
    assert not V2_OBJECTS & schema_names(db)  # and writes nothing
    upgrade(db)  # what the writer's first write (or `httptrack reindex`) does
    with httptrack.open_log(db) as log:
        assert sorted(r.id for r in log.calls(query="umbrellas")) == sorted([ids[5], ids[2]])
        assert log.stats(by="user") == stats_before
        assert log._rolled_up and log._searchable
    assert schema_names(db) >= V2_OBJECTS | V4_OBJECTS | V5_OBJECTS
    assert rows(db) == before
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
        assert applied == [
            "m001_create_calls",
            "m002_call_log_views",
            "m003_detail_rollup",
            "m004_read_indexes",
            "m005_combo_rollup",
        ]
        assert conn.execute("SELECT sum(calls) FROM calls_rollup WHERE dim = ''").fetchone()[0] == 8
        assert _rollup.bookmark(conn) == conn.execute("SELECT max(rowid) FROM calls").fetchone()[0]
    finally:
        conn.close()


def downgrade_to_v2(db: Path) -> None:
    """Make ``db`` what schema version 2 left: no detail rollup."""
    downgrade_to_v4(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for name in sorted(V3_OBJECTS):
            conn.execute(f"DROP TABLE {name}")
        for name in sorted(V4_OBJECTS):
            conn.execute(f"DROP INDEX {name}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_read_indexes'")
        conn.execute("DELETE FROM httptrack_state WHERE key = 'rollup_detail_rowid'")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_detail_rollup'")
        conn.execute("PRAGMA user_version = 2")
        conn.execute("COMMIT")
    finally:
        conn.close()


QUESTIONS: list[tuple[str | None, dict[str, Any]]] = [
    ("model", {"provider": "openai"}),
    (None, {"cached": False}),
    ("operation", {"status": "success", "model": ["llama3.2", "nomic-embed-text"]}),
    ("day", {"provider": "anthropic", "status": "success"}),
]


def test_a_version_2_log_gains_the_detail_rollup(db: Path) -> None:
    record_calls(db)
    with httptrack.open_log(db) as log:
        want = [log.stats(by=by, **filters) for by, filters in QUESTIONS]  # type: ignore[misc]
    downgrade_to_v2(db)
    assert not V3_OBJECTS & schema_names(db)
    with httptrack.open_log(db) as log:  # read as it is: the same answers, without the detail rollup
        assert not log._detailed
        for (by, filters), expected in zip(QUESTIONS, want, strict=True):
            assert log.stats(by=by, **filters) == expected  # type: ignore[misc]
    assert not V3_OBJECTS & schema_names(db)
    upgrade(db)
    with httptrack.open_log(db) as log:
        assert log._detailed
        for (by, filters), expected in zip(QUESTIONS, want, strict=True):
            assert log._rollup_plan(by, filters).tables[0] == "calls_rollup_detail"  # type: ignore[arg-type,union-attr]
            assert log.stats(by=by, **filters) == expected  # type: ignore[misc]
            log._rolled_up = False  # and from the calls alone
            assert log.stats(by=by, **filters) == expected  # type: ignore[misc]
            log._rolled_up = True
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT sum(calls) FROM calls_rollup_detail").fetchone()[0] == 8
        top = conn.execute("SELECT max(rowid) FROM calls").fetchone()[0]
        assert _rollup.detail_bookmark(conn) == _rollup.bookmark(conn) == top
    finally:
        conn.close()
    # A new process writes more: both rollups follow.
    writer().close_connections()
    record_calls(db)
    with httptrack.open_log(db) as log:
        for by, filters in QUESTIONS:
            got = log.stats(by=by, **filters)  # type: ignore[misc]
            assert sum(g["calls"] for g in got) == 2 * sum(
                g["calls"] for g in want[QUESTIONS.index((by, filters))]
            )
            log._rolled_up = False
            assert log.stats(by=by, **filters) == got  # type: ignore[misc]
            log._rolled_up = True


def test_an_older_writer_that_skips_the_detail_rollup_leaves_it_exact(db: Path) -> None:
    """A process of the previous version rolls up calls_rollup only and moves its bookmark:
    the detail rollup has its own, and readers add what it lacks."""
    ids = record_calls(db)
    copy = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
        select = ", ".join("?" if c == "id" else f'"{c}"' for c in columns)
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO calls SELECT {select} FROM calls WHERE id = ?", [copy, ids[0]])
        # What a writer of version 2 does: calls_rollup only, and its bookmark.
        new_rows = conn.execute(_rollup._SELECT_CALLS + "rowid > ?", [_rollup.bookmark(conn)]).fetchall()
        groups, top = _rollup._accumulate(new_rows)
        _rollup._merge_into(conn, groups)
        _rollup._set_bookmark(conn, top)
        conn.execute("COMMIT")
        assert _rollup.detail_bookmark(conn) == top - 1
    finally:
        conn.close()
    with httptrack.open_log(db) as log:
        assert log._rollup_plan("model", {"provider": "openai"}).tables[0] == "calls_rollup_detail"  # type: ignore[union-attr]
        got = log.stats(by="model", provider="openai")
        want: dict[str, int] = {}
        for r in rows(db, "provider = 'openai'"):
            model = r["response_model"] or r["model"]
            want[model] = want.get(model, 0) + 1
        assert {g["model"]: g["calls"] for g in got} == want and sum(want.values()) == 5
        log._rolled_up = False
        assert log.stats(by="model", provider="openai") == got
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        _rollup.roll_up_new_rows(conn)  # the next writer of this version catches up
        conn.execute("COMMIT")
        assert _rollup.detail_bookmark(conn) == top
        assert conn.execute("SELECT sum(calls) FROM calls_rollup_detail").fetchone()[0] == 9
    finally:
        conn.close()


def test_the_writer_upgrades_an_old_log_and_keeps_it_indexed(db: Path) -> None:
    record_calls(db)
    downgrade_to_v1(db)
    writer().close_connections()  # as a new process would: its first write migrates
    ids = record_calls(db)
    with httptrack.open_log(db) as log:
        assert log.totals()["calls"] == 16
        assert len(list(log.calls(query="umbrellas"))) == 4
        assert {r.id for r in log.calls(query="shipping")} >= {ids[3]}


def test_migrating_twice_is_harmless(db: Path) -> None:
    record_calls(db)
    conn = connect(db)
    try:
        migrate(conn)
        conn.execute("PRAGMA user_version = 1")  # as if another process had not seen it done
        migrate(conn)
        assert conn.execute("SELECT count(*) FROM calls_fts_docsize").fetchone()[0] == 8
        assert conn.execute("SELECT sum(calls) FROM calls_rollup WHERE dim = ''").fetchone()[0] == 8
    finally:
        conn.close()


def test_a_column_the_table_lacks_is_added_even_at_the_current_version(db: Path) -> None:
    """A column added to the schema without a migration of its own (or a table another tool
    altered) is added when the log is next opened: the writer's inserts keep working and no
    row is lost."""
    record_calls(db)
    before = [{k: v for k, v in r.items() if k != "pid"} for r in rows(db)]
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("ALTER TABLE calls DROP COLUMN pid")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    writer().close_connections()  # as a new process would
    record_calls(db)
    after = rows(db)
    assert len(after) == 16
    assert [{k: v for k, v in r.items() if k != "pid"} for r in after[:8]] == before
    assert [r["pid"] for r in after[:8]] == [None] * 8  # the old rows read NULL there
    assert {r["pid"] for r in after[8:]} == {os.getpid()}


@pytest.mark.parametrize("body", ['{"messages": [', "plain text prompt", None])
def test_bodies_that_are_not_json_are_indexed_as_text(db: Path, body: str | None) -> None:
    record_calls(db)
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO calls (id, started_at, provider, request_body, response_text) "
            "VALUES ('01ZZZZZZZZZZZZZZZZZZZZZZZZ', '2026-01-01T00:00:00.000Z', 'openai', ?, 'zebra')",
            [body],
        )
        assert _views.index_new_rows(conn) == 1
        assert _rollup.roll_up_new_rows(conn) == 1
        conn.execute("COMMIT")
        found = {r[0] for r in conn.execute("SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'zebra'")}
        assert len(found) == 1
        if body and "plain" in body:
            assert (
                conn.execute("SELECT count(*) FROM calls_fts WHERE calls_fts MATCH 'plain'").fetchone()[0]
                == 1
            )
    finally:
        conn.close()
