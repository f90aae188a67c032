"""A call log written by the first schema (version 1) upgrades in place: nothing lost, and
it gains the search index, the daily rollups, the reporting views and their indexes. Reading
an old log never writes it: it is read as it is, with the same answers."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
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
    downgrade_to_v5,
    record_calls,
    rows,
    transaction,
)

import httptrack
from httptrack.log import _indexes, _rollup, _views
from httptrack.log._schema import READ_INDEXES, WRITE_DROPPED_INDEXES
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
        assert applied == [
            "m001_create_calls",
            "m002_call_log_views",
            "m003_detail_rollup",
            "m004_read_indexes",
            "m005_combo_rollup",
            "m006_fewer_write_indexes",
        ]
        assert conn.execute("SELECT sum(calls) FROM calls_rollup WHERE dim = ''").fetchone()[0] == 8
        assert _rollup.bookmark(conn) == conn.execute("SELECT max(rowid) FROM calls").fetchone()[0]
    finally:
        conn.close()


def downgrade_to_v2(db: Path) -> None:
    """Make ``db`` what schema version 2 left: no detail rollup."""
    downgrade_to_v4(db)
    with transaction(db) as conn:
        for name in sorted(V3_OBJECTS):
            conn.execute(f"DROP TABLE {name}")
        for name in sorted(V4_OBJECTS):
            conn.execute(f"DROP INDEX {name}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_read_indexes'")
        conn.execute("DELETE FROM httptrack_state WHERE key = 'rollup_detail_rowid'")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_detail_rollup'")
        conn.execute("PRAGMA user_version = 2")


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


# -- indexes a big log gets later (log/_indexes) -----------------------------------------------


def downgrade_to_v3(db: Path) -> None:
    """Make ``db`` what schema version 3 left: none of m004's indexes, and the one it drops."""
    downgrade_to_v5(db)
    with transaction(db) as conn:
        for name in sorted(V4_OBJECTS):
            conn.execute(f"DROP INDEX {name}")
        conn.execute("CREATE INDEX idx_calls_latency ON calls (cached, latency_ms)")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_read_indexes'")
        conn.execute("PRAGMA user_version = 3")


def indexes_of(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def pending_of(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [key for key, _ in _indexes.pending(conn)]
    finally:
        conn.close()


def test_a_big_log_is_upgraded_at_once_and_gets_its_indexes_when_the_writer_is_idle(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m004's indexes take minutes to build on a big log, holding the write lock: the
    migration records them instead, the writer writes calls at once, and builds them once
    it is idle (then drops the index they replace)."""
    record_calls(db)
    downgrade_to_v3(db)
    writer().close_connections()  # as a new process would: its first write migrates
    monkeypatch.setattr(_indexes, "BUILD_NOW_BYTES", 0)  # every log is big
    monkeypatch.setattr(writer(), "_index_idle", 3600.0)
    record_calls(db)  # written at once, the indexes not built
    assert len(rows(db)) == 16
    names = indexes_of(db)
    assert not V4_OBJECTS & names and "idx_calls_latency" in names
    assert pending_of(db) == [
        *(f"{_indexes.PENDING_PREFIX}{name}" for name in READ_INDEXES),
        f"{_indexes.PENDING_PREFIX}drop idx_calls_latency",
        *(f"{_indexes.PENDING_PREFIX}drop {name}" for name in WRITE_DROPPED_INDEXES),
    ]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    with httptrack.open_log(db) as log:  # readers read meanwhile
        assert len(list(log.calls(query="umbrellas"))) == 4
    monkeypatch.setattr(writer(), "_index_idle", 0.01)
    writer()._wake.set()  # (it waits for an hour of quiet, as told above)
    for _ in range(500):
        if not pending_of(db):
            break
        time.sleep(0.02)
    names = indexes_of(db)
    assert names >= V4_OBJECTS and "idx_calls_latency" not in names
    assert not names & set(WRITE_DROPPED_INDEXES)
    assert pending_of(db) == []
    record_calls(db)
    assert len(rows(db)) == 24


def test_an_index_build_gives_way_and_is_resumed(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement left for later is interrupted and rolled back when ``stop`` says so
    (calls are waiting); what was built before it stays, and it is run again next time."""
    record_calls(db)
    downgrade_to_v3(db)
    writer().close_connections()
    monkeypatch.setattr(_indexes, "BUILD_NOW_BYTES", 0)
    upgrade(db)
    want = pending_of(db)
    assert len(want) == len(READ_INDEXES) + 1 + len(WRITE_DROPPED_INDEXES)
    conn = connect(db)
    try:
        # After them, a statement that would run for a minute (as an index on a big log does),
        # saying when it has started.
        started = threading.Event()
        conn.create_function("started", 0, lambda: started.set() or 1)
        slow = (
            "CREATE TABLE slow AS WITH RECURSIVE c(x) AS (SELECT started() UNION ALL "
            "SELECT x + 1 FROM c WHERE x < 300000000) SELECT count(*) AS n FROM c"
        )
        conn.execute(
            "INSERT INTO httptrack_state (key, value) VALUES (?, ?)", [_indexes.PENDING_PREFIX + "slow", slow]
        )
        assert _indexes.build_pending(conn, started.is_set) is False  # interrupted, rolled back
        assert not conn.in_transaction
        assert pending_of(db) == [_indexes.PENDING_PREFIX + "slow"]
        names = indexes_of(db)
        assert names >= V4_OBJECTS and "idx_calls_latency" not in names  # built before it: kept
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'slow'").fetchone() is None
        conn.execute("UPDATE httptrack_state SET value = 'CREATE TABLE slow (n)' WHERE key LIKE '%slow'")
        assert _indexes.build_pending(conn, lambda: False) is True  # the next time, to the end
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'slow'").fetchone() is not None
    finally:
        conn.close()
    assert pending_of(db) == []


def test_yield_to_waits_for_calls_that_keep_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(_indexes.time, "monotonic", lambda: now[0])
    waiting = [False]
    stop = _indexes.yield_to(lambda: waiting[0], seconds=0.5)
    assert not stop()
    waiting[0] = True
    assert not stop()
    now[0] += 0.4
    assert not stop()
    waiting[0] = False  # the queue emptied: counting starts again
    assert not stop()
    waiting[0] = True
    now[0] += 0.1
    assert not stop()
    now[0] += 0.5
    assert stop()


def test_httptrack_migrate_builds_what_was_left(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from httptrack.cli import main as cli

    record_calls(db)
    downgrade_to_v3(db)
    writer().close_connections()
    monkeypatch.setattr(_indexes, "BUILD_NOW_BYTES", 0)
    upgrade(db)
    assert pending_of(db)
    result = CliRunner().invoke(cli, ["migrate", "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "built what was left of the upgrade (6 steps" in result.output
    assert pending_of(db) == [] and indexes_of(db) >= V4_OBJECTS and "idx_calls_latency" not in indexes_of(db)
    result = CliRunner().invoke(cli, ["migrate", "--db", str(db)], catch_exceptions=False)
    assert result.output.strip() == "Up to date."


def test_m006_drops_the_indexes_others_answer_for_and_reads_answer_the_same(db: Path) -> None:
    """A schema-5 log (with ``idx_calls_started_at`` and ``idx_calls_day``) upgraded in
    place: both dropped, nothing else lost, and what reads by time or by day answers the
    same without them (through ``idx_calls_usage`` or a ``(column, started_at)`` index)."""
    record_calls(db)
    downgrade_to_v5(db)
    day = rows(db)[0]["started_at"][:10]
    questions = [
        ("SELECT id FROM calls ORDER BY started_at DESC, id DESC LIMIT 5", []),
        ("SELECT id FROM calls WHERE started_at >= ? ORDER BY started_at, id", [day]),
        ("SELECT min(started_at) FROM calls", []),  # (as Log.info asks: one each)
        ("SELECT max(started_at) FROM calls", []),
    ]
    conn = sqlite3.connect(db)
    try:
        assert {"idx_calls_started_at", "idx_calls_day"} <= indexes_of(db)
        want = [conn.execute(sql, params).fetchall() for sql, params in questions]
    finally:
        conn.close()
    writer().close_connections()
    before = rows(db)
    upgrade(db)
    assert not indexes_of(db) & set(WRITE_DROPPED_INDEXES)
    assert indexes_of(db) >= V4_OBJECTS | {"idx_calls_usage", "idx_calls_provider", "idx_calls_user"}
    assert rows(db) == before
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        assert [conn.execute(sql, params).fetchall() for sql, params in questions] == want
        for sql, params in questions:  # an index, not the table
            plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "INDEX idx_calls_usage" in plan, plan
    finally:
        conn.close()
    record_calls(db)  # and the writer writes on
    assert len(rows(db)) == 2 * len(before)
