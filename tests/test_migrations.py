"""A call log written by the first schema (version 1) upgrades in place: nothing lost, and
it gains the search index, the daily rollups, the reporting views and their indexes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from recorded_log import record_calls, rows

import httptrack
from httptrack import _rollup, _views
from httptrack._store import SCHEMA_VERSION, connect, migrate, writer

V2_OBJECTS = {
    "calls_fts",
    "calls_rollup",
    "calls_rollup_latency",
    "httptrack_state",
    "idx_calls_usage",
    "idx_calls_latency",
    *_views.VIEWS,
}


def downgrade_to_v1(db: Path) -> None:
    """Make ``db`` what schema version 1 left: the ``calls`` table and its indexes only."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for name, kind in conn.execute(
            f"SELECT name, type FROM sqlite_master WHERE name IN ({', '.join('?' * len(V2_OBJECTS))})",
            sorted(V2_OBJECTS),
        ).fetchall():
            conn.execute(f"DROP {kind.upper()} IF EXISTS {name}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_call_log_views'")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
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

    with httptrack.open_log(db) as log:  # reading an old log upgrades it first
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5], ids[2]]
        assert log.stats(by="user") == stats_before
        assert log._rolled_up and log._searchable
    assert schema_names(db) >= V2_OBJECTS
    assert rows(db) == before
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
        assert applied == ["m001_create_calls", "m002_call_log_views"]
        assert conn.execute("SELECT sum(calls) FROM calls_rollup WHERE dim = ''").fetchone()[0] == 8
        assert _rollup.bookmark(conn) == conn.execute("SELECT max(rowid) FROM calls").fetchone()[0]
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
