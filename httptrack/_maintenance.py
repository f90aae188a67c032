"""Looking after the call log: removing old calls or only their bodies (``httptrack
prune``), and rebuilding what is derived from the calls (``httptrack reindex``).

Works beside a live writer: each step is one short write transaction (the writer waits
out its busy timeout, then retries; nothing is lost). The full-text index forgets what
is removed, so a pruned prompt cannot be found (or recovered from the index) afterwards,
and the daily rollups lose the deleted calls.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import _rollup, _views
from ._log import parse_when
from ._store import connect, migrate, write_transaction

__all__ = ["BODY_COLUMNS", "PruneResult", "count_prunable", "prune", "reindex"]

#: What ``bodies_only`` clears: the content of a call, not its figures.
BODY_COLUMNS = ("request_body", "response_body", "response_text")
_CHUNK = 20_000  # rows per transaction: keeps each write lock short


@dataclass(frozen=True)
class PruneResult:
    cutoff: str
    """Calls that started before this were pruned."""
    calls: int
    """Calls deleted (or, with ``bodies_only``, calls whose bodies were cleared)."""
    bodies_only: bool
    bytes_before: int
    bytes_after: int


def _where(cutoff: str, bodies_only: bool) -> str:
    where = "started_at < ?"
    if bodies_only:
        where += " AND (" + " OR ".join(f"{c} IS NOT NULL" for c in BODY_COLUMNS) + ")"
    return where


def count_prunable(
    path: str | Path, older_than: str | datetime, *, bodies_only: bool = False
) -> tuple[str, int]:
    """(cutoff, how many calls ``prune`` would touch), read-only."""
    cutoff = parse_when(older_than)
    conn = connect(path, readonly=True)
    try:
        (n,) = conn.execute(
            f"SELECT count(*) FROM calls WHERE {_where(cutoff, bodies_only)}", [cutoff]
        ).fetchone()
    finally:
        conn.close()
    return cutoff, int(n)


def prune(
    path: str | Path, older_than: str | datetime, *, bodies_only: bool = False, vacuum: bool = False
) -> PruneResult:
    """Delete the calls that started before ``older_than`` (``30d``, an ISO date, a
    ``datetime``), or with ``bodies_only`` keep them and clear their request and response
    bodies and generated text. ``vacuum`` then gives the freed space back to the disk (it
    rewrites the whole file, holding the lock meanwhile)."""
    path = Path(path)
    cutoff = parse_when(older_than)
    before = _size(path)
    conn = connect(path)
    try:
        migrate(conn)
        searchable = _views.search_index_exists(conn)
        where = _where(cutoff, bodies_only)
        total = 0
        while True:
            with write_transaction(conn):
                chunk = f"rowid IN (SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {_CHUNK})"
                if searchable:
                    _views.unindex(conn, chunk, [cutoff])
                if bodies_only:
                    sets = ", ".join(f"{c} = NULL" for c in BODY_COLUMNS)
                    done = conn.execute(f"UPDATE calls SET {sets} WHERE {chunk}", [cutoff]).rowcount
                else:
                    done = conn.execute(f"DELETE FROM calls WHERE {chunk}", [cutoff]).rowcount
            total += done
            if done < _CHUNK:
                break
        if not bodies_only and total and _rollup.rollups_exist(conn):
            # The day of the cutoff lost part of its calls, the days before all of them.
            with write_transaction(conn):
                _rollup.recompute_days(conn, None, cutoff[:10])
        if vacuum:
            _vacuum(conn, searchable)
        else:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()
    return PruneResult(
        cutoff=cutoff, calls=total, bodies_only=bodies_only, bytes_before=before, bytes_after=_size(path)
    )


def _vacuum(conn: sqlite3.Connection, searchable: bool) -> None:
    # VACUUM may renumber the rows of a table without an INTEGER PRIMARY KEY, and the
    # search index points at rows by number: if the newest row moved, index again.
    probe = "SELECT rowid FROM calls ORDER BY id DESC LIMIT 1"
    before = conn.execute(probe).fetchone()
    conn.execute("VACUUM")
    if searchable and conn.execute(probe).fetchone() != before:
        with write_transaction(conn):
            _views.rebuild_search_index(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def reindex(path: str | Path) -> int:
    """Rebuild the full-text search index and the daily rollups from ``calls`` (after the
    table was edited with another tool). Returns how many calls there are."""
    conn = connect(path)
    try:
        migrate(conn)
        with write_transaction(conn):
            if _views.search_index_exists(conn):
                _views.rebuild_search_index(conn)
            if _rollup.rollups_exist(conn):
                _rollup.rebuild_rollups(conn)
            (n,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    finally:
        conn.close()
    return int(n)
