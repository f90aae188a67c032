"""``calls_rollup_combo``: the sums per day and combination of user, service and the detail
dimensions, behind the questions that combine a user or a service with another dimension.
Every answer it gives is the one the calls give; a log that had calls before it existed
is rolled up into it a step at a time (never all at once under the write lock)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from recorded_log import downgrade_to_v4, record_calls, rows

import httptrack
from httptrack.log import _rollup
from httptrack.log._retention import delete_calls
from httptrack.log._sqlite import Store, connect, migrate, write_transaction
from httptrack.record._writer import writer

#: (by, filters): a user or a service with another dimension, grouped or filtered.
QUESTIONS: list[tuple[str | None, dict[str, Any]]] = [
    ("model", {"user": "alice"}),
    ("user", {"provider": "openai"}),
    ("service", {"user": ["alice", "bob"]}),
    ("user", {"model": "gpt-4o-mini"}),
    ("requested_model", {"service": "support", "status": "success"}),
    (None, {"user": "bob", "provider": "anthropic"}),
    ("user", {"cached": False, "operation": "chat"}),
    ("service", {"status": "error"}),
]


def answers(log: httptrack.Log) -> list[list[dict[str, Any]]]:
    return [log.stats(by=by, **filters) for by, filters in QUESTIONS]  # type: ignore[misc]


def from_calls(log: httptrack.Log) -> list[list[dict[str, Any]]]:
    log._rolled_up = False
    try:
        return answers(log)
    finally:
        log._rolled_up = True


def test_questions_combining_a_user_or_service_are_answered_from_the_combination_rollup(db: Path) -> None:
    record_calls(db)
    with httptrack.open_log(db) as log:
        assert log._combined
        for by, filters in QUESTIONS:
            plan = log._rollup_plan(by, filters)  # type: ignore[arg-type]
            assert plan is not None and plan.tables[0] == _rollup.COMBO_TABLE, (by, filters)
        got = answers(log)
        assert got == from_calls(log)
        assert sum(g["calls"] for g in got[1]) == 4  # openai's calls, by user
        assert all(g["p50_latency_ms"] is not None for g in got[0])  # histograms are there too


def test_a_version_4_log_is_rolled_up_into_it_a_step_at_a_time(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_calls(db)
    with httptrack.open_log(db) as log:
        want = answers(log)
    downgrade_to_v4(db)
    writer().close_connections()
    monkeypatch.setattr(_rollup, "COMBO_STEP", 3)
    store = Store(db)
    store.open()  # migrates: m005 rolls up the first step only
    conn = connect(db)
    try:
        top = conn.execute("SELECT max(rowid) FROM calls").fetchone()[0]
        assert top == 8 and _rollup.combo_bookmark(conn) == 3
        assert conn.execute(f"SELECT sum(calls) FROM {_rollup.COMBO_TABLE}").fetchone()[0] == 3
    finally:
        conn.close()
    with httptrack.open_log(db) as log:  # readers add the calls past its bookmark: exact
        assert log._rollup_plan("model", {"user": "alice"}).tables[0] == _rollup.COMBO_TABLE  # type: ignore[union-attr]
        assert answers(log) == want
    # The writer goes on a step at each derive, without new calls to write (the store says
    # it is behind, so the writer thread keeps coming back).
    steps = 0
    while store.behind:
        assert steps < 10
        store.catch_up()
        steps += 1
    assert steps == 2
    store.close()
    conn = connect(db)
    try:
        assert _rollup.combo_bookmark(conn) == 8
        assert conn.execute(f"SELECT sum(calls) FROM {_rollup.COMBO_TABLE}").fetchone()[0] == 8
    finally:
        conn.close()
    with httptrack.open_log(db) as log:
        assert answers(log) == want == from_calls(log)


def test_a_combination_rollup_far_behind_is_not_read(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_calls(db)
    downgrade_to_v4(db)
    monkeypatch.setattr(_rollup, "COMBO_STEP", 1)
    monkeypatch.setattr(_rollup, "COMBO_MAX_LAG", 5)
    conn = connect(db)
    try:
        migrate(conn)
    finally:
        conn.close()
    with httptrack.open_log(db) as log:
        assert log._rollup_plan("model", {"user": "alice"}) is None  # 7 calls behind: the calls answer
        assert answers(log) == from_calls(log)


def test_calls_deleted_while_it_catches_up_still_count(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deletes the oldest calls: the combination rollup, still catching up, takes
    them first (as every rollup does), however far behind it is."""
    record_calls(db)
    with httptrack.open_log(db) as log:
        want = answers(log)
    downgrade_to_v4(db)
    monkeypatch.setattr(_rollup, "COMBO_STEP", 1)
    conn = connect(db)
    try:
        migrate(conn)
        assert _rollup.combo_bookmark(conn) == 1
        with write_transaction(conn):
            assert delete_calls(conn, None, 5) == 5
        assert _rollup.combo_bookmark(conn) >= 5
    finally:
        conn.close()
    assert len(rows(db)) == 3
    with httptrack.open_log(db) as log:
        assert answers(log) == want  # the deleted calls count, as in the other rollups


def test_rebuilding_and_recomputing_days_keep_it_exact(db: Path) -> None:
    record_calls(db)
    with httptrack.open_log(db) as log:
        want = answers(log)
    conn = connect(db)
    try:
        with write_transaction(conn):
            _rollup.rebuild_rollups(conn)
        with write_transaction(conn):
            (day,) = conn.execute("SELECT substr(max(started_at), 1, 10) FROM calls").fetchone()
            _rollup.recompute_days(conn, None, day)
    finally:
        conn.close()
    with httptrack.open_log(db) as log:
        assert answers(log) == want


def test_histograms_round_trip() -> None:
    hist = {-3: 1, 0: 2, 250: 7}
    blob = _rollup.encode_hist(hist)
    assert isinstance(blob, bytes) and len(blob) == 24
    into: dict[int, int] = {0: 1}
    _rollup.decode_hist(blob, into)
    assert into == {-3: 1, 0: 3, 250: 7}
    assert _rollup.encode_hist({}) is None
    conn = sqlite3.connect(":memory:")
    _rollup.register_hist_function(conn)
    (added,) = conn.execute(f"SELECT {_rollup.HIST_FUNCTION}(?, ?)", [blob, blob]).fetchone()
    both: dict[int, int] = {}
    _rollup.decode_hist(added, both)
    assert both == {-3: 2, 0: 4, 250: 14}


def test_the_writer_s_page_cache_grows_with_a_big_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.log import _sqlite

    def sized(name: str, size: int) -> Path:
        path = tmp_path / name
        with path.open("wb") as f:
            f.truncate(size)  # sparse: takes no disk
        return path

    assert _sqlite.writer_cache_kib(tmp_path / "missing.db") == 0
    assert _sqlite.writer_cache_kib(sized("small.db", 100 << 20)) == 0  # SQLite's default 2 MB
    assert _sqlite.writer_cache_kib(sized("mid.db", 1 << 30)) == 16 * 1024
    assert _sqlite.writer_cache_kib(sized("big.db", 8 << 30)) == 64 * 1024
    monkeypatch.setattr(_sqlite, "writer_cache_kib", lambda path: 4096)
    store = Store(tmp_path / "log.db")
    store.open()
    try:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA cache_size").fetchone()[0] == -4096
    finally:
        store.close()
