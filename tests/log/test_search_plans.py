"""``calls -q`` at scale: a limited search walks the calls in time order and looks each up
in the search index while that is quick (a common word), else looks the matches up (a
rare one); either way the newest matches by start time, as the plain query gives them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from recorded_log import write_log

import httptrack
from httptrack.log import _reader


@pytest.fixture
def log_db(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    write_log(path)
    return path


def newest(db: Path, match: str, where: str = "1", limit: int = 20) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [
            r[0]
            for r in conn.execute(
                "SELECT id FROM calls WHERE rowid IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?) "
                f"AND {where} ORDER BY started_at DESC, id DESC LIMIT ?",
                [match, limit],
            )
        ]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("query", "match", "filters", "where"),
    [
        ("refund", '"refund"', {}, "1"),
        ('"refund policy"', '"refund policy"', {}, "1"),
        ("refund python", '"refund" "python"', {"user": "u1"}, "user = 'u1'"),
        ("zebra", '"zebra"', {}, "1"),
    ],
)
@pytest.mark.parametrize("probe_seconds", [10.0, 0.0])
def test_a_limited_search_gives_the_newest_matches(
    log_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    match: str,
    filters: dict[str, str],
    where: str,
    probe_seconds: float,
) -> None:
    monkeypatch.setattr(_reader, "PROBE_SECONDS", probe_seconds)  # the walk answers / gives up at once
    with httptrack.open_log(log_db) as log:
        got = [r["id"] for r in log.rows(limit=20, query=query, columns=["id"], **filters)]  # type: ignore[arg-type]
        assert got == newest(log_db, match, where)
        everything = [r["id"] for r in log.rows(query=query, columns=["id"], **filters)]  # type: ignore[arg-type]
        assert everything == newest(log_db, match, where, 10_000)


def test_started_at_is_not_the_order_written(log_db: Path) -> None:
    conn = sqlite3.connect(log_db)
    try:
        by_time = [r[0] for r in conn.execute("SELECT rowid FROM calls ORDER BY started_at, id")]
    finally:
        conn.close()
    assert by_time != sorted(by_time)  # so the tests above tell the two orders apart
