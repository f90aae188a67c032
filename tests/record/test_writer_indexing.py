"""The writer keeps the search index and the daily rollup up to date: per batch under a
steady stream (at most every DERIVE_SECONDS or DERIVE_ROWS), and always at flush()."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from recorded_log import record_calls

import httptrack
from httptrack.log import _sqlite as _store
from httptrack.record import _writer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def indexed(db: Path) -> tuple[int, int]:
    """(calls in the search index, calls in the rollup's day totals)."""
    conn = sqlite3.connect(db)
    try:
        fts = conn.execute("SELECT count(*) FROM calls_fts_docsize").fetchone()[0]
        rolled = conn.execute("SELECT coalesce(sum(calls), 0) FROM calls_rollup WHERE dim = ''").fetchone()[0]
        return fts, rolled
    finally:
        conn.close()


def test_small_batches_are_indexed_together(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench_log

    rows = list(bench_log._rows(10, seed=3))
    monkeypatch.setattr(_store, "DERIVE_SECONDS", 3600.0)
    monkeypatch.setattr(_store, "DERIVE_ROWS", 4)
    store = _store.Store(db)
    try:
        store.write(rows[:1])  # the first write indexes at once (nothing done for a while)
        assert indexed(db) == (1, 1) and store.behind == 0
        store.write(rows[1:2])
        store.write(rows[2:4])
        assert indexed(db) == (1, 1) and store.behind == 3
        with httptrack.open_log(db) as log:
            assert log.totals()["calls"] == 4  # readers add what the rollup does not hold yet
        store.write(rows[4:5])  # 4 behind: due
        assert indexed(db) == (5, 5) and store.behind == 0
        store.write(rows[5:6])
        store.catch_up()
        assert indexed(db) == (6, 6) and store.behind == 0
    finally:
        store.close()


def test_flush_indexes_everything(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_store, "DERIVE_SECONDS", 3600.0)
    monkeypatch.setattr(_store, "DERIVE_ROWS", 10_000)
    ids = record_calls(db)  # ends with httptrack.flush()
    assert indexed(db) == (8, 8)
    with httptrack.open_log(db) as log:
        assert [r.id for r in log.calls(query="umbrellas")] == [ids[5], ids[2]]


def test_an_index_failure_never_costs_the_calls(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack import _faults
    from httptrack.log import _views

    record_calls(db)

    def broken(conn: sqlite3.Connection) -> int:
        raise sqlite3.OperationalError("database disk image is malformed")

    monkeypatch.setattr(_views, "index_new_rows", broken)
    _writer.writer().close_connections()
    record_calls(db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 16
    finally:
        conn.close()
    assert _faults.fault_counts().get("search_index", 0) >= 1
    assert indexed(db) == (8, 16)  # the rollup went on


def test_the_benchmarks_bulk_load_is_what_the_writer_makes(tmp_path: Path) -> None:
    """bench_log's bulk load (bodies compressed, search index fed per batch, rollups and
    indexes at the end) gives the database the writer's Store makes from the same calls:
    schema, stored bodies, search results, rollups; and a bulk-loaded call can be unindexed
    (a contentless index forgets only the exact text it was given)."""
    import bench_log

    from httptrack.log import _views

    bulk, written = tmp_path / "bulk.db", tmp_path / "written.db"
    bench_log.generate(bulk, 400, progress=False)
    conn = sqlite3.connect(bulk)
    store = _store.Store(written)
    try:
        # The same calls (the generator's ids are random: taken from the bulk load).
        names = ", ".join(f'"{c}"' for c in bench_log.COLUMN_NAMES)
        from httptrack.log._bodies import body_text

        at = [bench_log.COLUMN_NAMES.index(c) for c in ("request_body", "response_body")]
        rows = [
            tuple(body_text(v) if i in at else v for i, v in enumerate(row))
            for row in conn.execute(f"SELECT {names} FROM calls ORDER BY rowid")
        ]
        store.write(rows)
        store.catch_up()
    finally:
        store.close()
        conn.close()

    def snapshot(db: Path) -> dict[str, Any]:
        c = sqlite3.connect(db)
        try:
            return {
                "schema": sorted(
                    c.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
                ),
                "calls": c.execute(f"SELECT {names} FROM calls ORDER BY rowid").fetchall(),
                "rollup": c.execute("SELECT * FROM calls_rollup ORDER BY 1, 2, 3").fetchall(),
                "detail": c.execute(
                    "SELECT * FROM calls_rollup_detail ORDER BY 1, 2, 3, 4, 5, 6, 7"
                ).fetchall(),
                "latency": c.execute("SELECT * FROM calls_rollup_latency ORDER BY 1, 2, 3, 4").fetchall(),
                "search": [
                    c.execute(
                        "SELECT group_concat(rowid) FROM calls_fts WHERE calls_fts MATCH ?", [w]
                    ).fetchone()
                    for w in (
                        "refund",
                        '"refund policy"',
                        "paris NOT london",
                        "prompt: invoice",
                        "response: python",
                        "temperature OR assistant",  # JSON keys and roles: not prompt text
                    )
                ],
            }
        finally:
            c.close()

    got, want = snapshot(bulk), snapshot(written)
    assert got.keys() == want.keys()
    for key in got:
        assert got[key] == want[key], key
    assert any(rowids for (rowids,) in got["search"])
    conn = sqlite3.connect(bulk)
    try:
        with conn:
            _views.unindex(conn, "rowid <= 200", [])
        left = conn.execute(
            "SELECT min(rowid), count(*) FROM calls_fts WHERE calls_fts MATCH 'the OR temperature'"
        ).fetchone()
        assert left[0] > 200 and left[1] > 0
    finally:
        conn.close()
