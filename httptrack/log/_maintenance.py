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
from ._reader import parse_when
from ._sqlite import connect, migrate, write_transaction

__all__ = ["BODY_COLUMNS", "PruneResult", "count_prunable", "prune", "reindex"]

#: What ``bodies_only`` clears: the content of a call, not its figures.
BODY_COLUMNS = ("request_body", "response_body", "response_text")
_CHUNK = 20_000  # rows per transaction: keeps each write lock short


@dataclass(frozen=True)
class PruneResult:
    cutoff: str | None
    """Calls that started before this were deleted (``bodies_only``: lost their bodies)."""
    calls: int
    """Calls deleted (or, with ``bodies_only``, calls whose bodies were cleared)."""
    bodies_only: bool
    bytes_before: int
    bytes_after: int
    bodies_cutoff: str | None = None
    """``keep_bodies``: the calls (still there) that started before this lost their bodies."""
    bodies: int = 0
    """``keep_bodies``: how many calls lost their bodies (and stayed)."""


_HAS_BODIES = "(" + " OR ".join(f"{c} IS NOT NULL" for c in BODY_COLUMNS) + ")"


@dataclass(frozen=True)
class _Part:
    where: str
    """Takes ``cutoff`` as its one parameter."""
    cutoff: str
    clear: bool
    """Clear the bodies of these calls instead of deleting them."""


def _plan(
    older_than: str | datetime | None, bodies_only: bool, keep_bodies: str | datetime | None
) -> tuple[_Part | None, _Part | None]:
    """The parts of a prune, in the order they run: delete (or with ``bodies_only`` clear)
    the calls older than ``older_than``; then clear the bodies of those older than
    ``keep_bodies`` (what the first part deleted is gone by then)."""
    if older_than is None and keep_bodies is None:
        raise ValueError("nothing to prune: give older_than, keep_bodies or both")
    if keep_bodies is not None and bodies_only:
        raise ValueError("keep_bodies already keeps the calls: it does not go with bodies_only")
    calls = bodies = None
    if older_than is not None:
        where = "started_at < ?" + (f" AND {_HAS_BODIES}" if bodies_only else "")
        calls = _Part(where, parse_when(older_than), bodies_only)
    if keep_bodies is not None:
        bodies = _Part(f"started_at < ? AND {_HAS_BODIES}", parse_when(keep_bodies), True)
    if calls is not None and bodies is not None and bodies.cutoff < calls.cutoff:
        raise ValueError("keep_bodies is longer than older_than: the calls would go before their bodies")
    return calls, bodies


def count_prunable(
    path: str | Path,
    older_than: str | datetime | None,
    *,
    bodies_only: bool = False,
    keep_bodies: str | datetime | None = None,
) -> tuple[str | None, int, str | None, int]:
    """(cutoff, how many calls ``prune`` would delete (or clear), bodies cutoff, how many
    other calls would lose their bodies), read-only."""
    calls, bodies = _plan(older_than, bodies_only, keep_bodies)
    conn = connect(path, readonly=True)
    try:

        def count(where: str, params: list[str]) -> int:
            (n,) = conn.execute(f"SELECT count(*) FROM calls WHERE {where}", params).fetchone()
            return int(n)

        n_calls = count(calls.where, [calls.cutoff]) if calls else 0
        n_bodies = 0
        if bodies is not None:
            if calls is not None and not calls.clear:  # not counting what goes first
                n_bodies = count(f"{bodies.where} AND started_at >= ?", [bodies.cutoff, calls.cutoff])
            else:
                n_bodies = count(bodies.where, [bodies.cutoff])
    finally:
        conn.close()
    return (calls.cutoff if calls else None), n_calls, (bodies.cutoff if bodies else None), n_bodies


def prune(
    path: str | Path,
    older_than: str | datetime | None = None,
    *,
    bodies_only: bool = False,
    keep_bodies: str | datetime | None = None,
    vacuum: bool = False,
) -> PruneResult:
    """Delete the calls that started before ``older_than`` (``30d``, an ISO date, a
    ``datetime``), or with ``bodies_only`` keep them and clear their request and response
    bodies and generated text. ``keep_bodies`` (a retention policy beside ``older_than``,
    or alone) clears the bodies of the calls (kept) that started before it: ``older_than=
    "90d", keep_bodies="7d"`` deletes calls after 90 days and their prompts after 7.
    ``vacuum`` then gives the freed space back to the disk (it rewrites the whole file,
    holding the lock meanwhile)."""
    path = Path(path)
    calls, bodies = _plan(older_than, bodies_only, keep_bodies)
    before = _size(path)
    conn = connect(path)
    try:
        migrate(conn)
        searchable = _views.search_index_exists(conn)
        n_calls = _prune_part(conn, calls, searchable) if calls else 0
        n_bodies = _prune_part(conn, bodies, searchable) if bodies else 0
        if calls is not None and not calls.clear and n_calls and _rollup.rollups_exist(conn):
            # The day of the cutoff lost part of its calls, the days before all of them.
            with write_transaction(conn):
                _rollup.recompute_days(conn, None, calls.cutoff[:10])
        if vacuum:
            _vacuum(conn, searchable)
        else:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()
    return PruneResult(
        cutoff=calls.cutoff if calls else None,
        calls=n_calls,
        bodies_only=bodies_only,
        bytes_before=before,
        bytes_after=_size(path),
        bodies_cutoff=bodies.cutoff if bodies else None,
        bodies=n_bodies,
    )


def _prune_part(conn: sqlite3.Connection, part: _Part, searchable: bool) -> int:
    """Delete the calls of ``part`` (or clear their bodies), a chunk per short transaction,
    taking them out of the search index first. Returns how many."""
    total = 0
    where, cutoff = part.where, part.cutoff
    while True:
        with write_transaction(conn):
            chunk = f"rowid IN (SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {_CHUNK})"
            if searchable:
                _views.unindex(conn, chunk, [cutoff])
            if part.clear:
                sets = ", ".join(f"{c} = NULL" for c in BODY_COLUMNS)
                done = conn.execute(f"UPDATE calls SET {sets} WHERE {chunk}", [cutoff]).rowcount
            else:
                done = conn.execute(f"DELETE FROM calls WHERE {chunk}", [cutoff]).rowcount
        total += done
        if done < _CHUNK:
            return total


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
