"""Looking after the call log: removing old calls or only their bodies (``httptrack
prune``), and rebuilding what is derived from the calls (``httptrack reindex``).

Works beside a live writer: each step is one short write transaction (the writer waits
out its busy timeout, then retries; nothing is lost). The full-text index forgets what
is removed, so a pruned prompt cannot be found (or recovered from the index) afterwards.
The daily rollups keep the deleted calls: ``stats``, the cost views and the dashboard
still count what was spent on days whose calls are gone (a range that starts or ends
inside such a day counts the calls left of its partial day). ``reindex`` rebuilds them
from the calls there are, for the days that still have calls.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import _rollup, _views
from ._indexes import build_pending, pending
from ._reader import parse_when
from ._retention import BODY_COLUMNS, HAS_BODIES, SizeDebt, drop_bodies, size_step, used_bytes
from ._sqlite import connect, migrate, write_transaction

__all__ = [
    "BODY_COLUMNS",
    "PruneResult",
    "count_prunable",
    "estimate_size_prune",
    "log_bytes",
    "prune",
    "reindex",
    "upgrade",
]

_CHUNK = 20_000  # rows per transaction: keeps each write lock short
#: Calls per transaction while pruning to a size: the size is measured again after each.
_SIZE_CHUNK = 2_000


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
    max_size: int | None = None
    """``max_size``: the bytes the log was to use at most."""
    size_bodies: int = 0
    """``max_size``: how many calls lost their bodies to bring the log under it."""
    size_calls: int = 0
    """``max_size``: how many calls were deleted to bring it under (after every body)."""
    used_before: int = 0
    used_after: int = 0
    """Bytes holding data before and after (free pages left out; see ``log_bytes``)."""


_HAS_BODIES = HAS_BODIES


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
        return None, None
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
    max_size: int | None = None,
) -> PruneResult:
    """Delete the calls that started before ``older_than`` (``30d``, an ISO date, a
    ``datetime``), or with ``bodies_only`` keep them and clear their request and response
    bodies and generated text. ``keep_bodies`` (a retention policy beside ``older_than``,
    or alone) clears the bodies of the calls (kept) that started before it: ``older_than=
    "90d", keep_bodies="7d"`` deletes calls after 90 days and their prompts after 7.
    ``max_size`` (bytes) then drops the bodies of the oldest calls while the log uses more
    than that (see ``log_bytes``), and once no call has a body left, deletes the oldest
    calls. Deleted calls still count in the daily rollups. ``vacuum`` then gives the
    freed space back to the disk (it rewrites the whole file, holding the lock meanwhile)."""
    path = Path(path)
    calls, bodies = _plan(older_than, bodies_only, keep_bodies)
    if calls is None and bodies is None and max_size is None:
        raise ValueError("nothing to prune: give older_than, keep_bodies, max_size or a mix")
    before = _size(path)
    conn = connect(path)
    try:
        migrate(conn)
        used_before = used_bytes(conn)
        searchable = _views.search_index_exists(conn)
        n_calls = _prune_part(conn, calls, searchable) if calls else 0
        n_bodies = _prune_part(conn, bodies, searchable) if bodies else 0
        size_bodies = size_calls = 0
        if max_size is not None:
            size_bodies, size_calls = _prune_to_size(conn, max_size)
        used_after = used_bytes(conn)
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
        max_size=max_size,
        size_bodies=size_bodies,
        size_calls=size_calls,
        used_before=used_before,
        used_after=used_after,
    )


def log_bytes(path: str | Path) -> int:
    """The bytes of the log that hold data: what ``max_size`` and ``HTTPTRACK_RETENTION``'s
    ``size`` bound. Less than the file when calls were deleted since the last ``VACUUM``
    (their pages wait, free, for the next calls)."""
    conn = connect(path, readonly=True)
    try:
        return used_bytes(conn)
    finally:
        conn.close()


def estimate_size_prune(path: str | Path, max_size: int) -> tuple[int, int, int]:
    """(bytes the log uses now, about how many calls would lose their bodies, about how
    many would then be deleted) for ``prune(max_size=...)``, read-only. An estimate: the
    bodies' stored lengths against the excess (the pages they free may differ a little)."""
    conn = connect(path, readonly=True)
    try:
        used = used_bytes(conn)
        excess = used - max_size
        if excess <= 0:
            return used, 0, 0
        lengths = conn.execute(
            "SELECT "
            + " + ".join(f"coalesce(length({c}), 0)" for c in BODY_COLUMNS)
            + f" FROM calls WHERE {HAS_BODIES} ORDER BY started_at"
        )
        cleared = 0
        for (size,) in lengths:
            if excess <= 0:
                break
            excess -= size
            cleared += 1
        lengths.close()
        deleted = 0
        if excess > 0:
            (count,) = conn.execute("SELECT count(*) FROM calls").fetchone()
            per_call = max(1, (used - (used - max_size - excess)) // max(count, 1))
            deleted = min(count, -(-excess // per_call))
        return used, cleared, deleted
    finally:
        conn.close()


def _prune_to_size(conn: sqlite3.Connection, max_size: int) -> tuple[int, int]:
    """Drop the oldest bodies, then delete the oldest calls, a chunk per transaction, until
    the log uses at most ``max_size`` bytes (``_retention.size_step``: what each chunk
    frees is counted, the search index compacted, then the size measured again). Returns
    (calls cleared, calls deleted)."""
    debt = SizeDebt()
    while True:
        with write_transaction(conn):
            if debt.left <= 0 and debt.compacting:
                debt.compacting = False
                _compact_search_index(conn)  # at once here: nothing else is waiting for it
                continue
            if not size_step(conn, max_size, debt, _SIZE_CHUNK):
                return debt.cleared, debt.deleted


def _prune_part(conn: sqlite3.Connection, part: _Part, searchable: bool) -> int:
    """Delete the calls of ``part`` (or clear their bodies), a chunk per short transaction,
    taking them out of the search index first. Returns how many."""
    total = 0
    where, cutoff = part.where, part.cutoff
    if not part.clear and _rollup.rollups_exist(conn):
        with write_transaction(conn):  # the deleted calls keep counting in their days' totals
            _rollup.roll_up_new_rows(conn)
    while True:
        with write_transaction(conn):
            chunk = f"rowid IN (SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {_CHUNK})"
            if part.clear:
                done = drop_bodies(conn, chunk, [cutoff])
            else:
                if searchable:
                    _views.unindex(conn, chunk, [cutoff])
                done = int(conn.execute(f"DELETE FROM calls WHERE {chunk}", [cutoff]).rowcount)
        total += done
        if done < _CHUNK:
            return total


def _compact_search_index(conn: sqlite3.Connection) -> None:
    if _views.search_index_exists(conn):
        conn.execute(f"INSERT INTO {_views.FTS_TABLE}({_views.FTS_TABLE}) VALUES ('optimize')")


def _vacuum(conn: sqlite3.Connection, searchable: bool) -> None:
    # VACUUM may renumber the rows of a table without an INTEGER PRIMARY KEY, and the
    # search index points at rows by number: if the newest row moved, index again.
    probe = "SELECT rowid FROM calls ORDER BY id DESC LIMIT 1"
    rolled_up = _rollup.rollups_exist(conn)
    if rolled_up:
        with write_transaction(conn):
            _rollup.roll_up_new_rows(conn)
    before = conn.execute(probe).fetchone()
    conn.execute("VACUUM")
    if conn.execute(probe).fetchone() != before:
        with write_transaction(conn):
            if searchable:
                _views.rebuild_search_index(conn)
            if rolled_up:  # every call there is was rolled up: the bookmarks at the new top
                (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()
                for key in (_rollup.BOOKMARK_KEY, _rollup.DETAIL_BOOKMARK_KEY, _rollup.COMBO_BOOKMARK_KEY):
                    conn.execute(f"UPDATE {_rollup.STATE_TABLE} SET value = ? WHERE key = ?", [top, key])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def upgrade(path: str | Path) -> tuple[int, int]:
    """Bring the log to this version's schema now, and build every index its migrations left
    for the writer's idle time (``_indexes``): (statements run, seconds it took)."""
    import time

    started = time.monotonic()
    conn = connect(path)
    try:
        migrate(conn)
        n = len(pending(conn))
        build_pending(conn)
    finally:
        conn.close()
    return n, round(time.monotonic() - started)


def reindex(path: str | Path) -> int:
    """Rebuild the full-text search index and the daily rollups from ``calls`` (after the
    table was edited with another tool). The rollups of the days before the oldest call
    are kept (pruned calls count there). Returns how many calls there are."""
    conn = connect(path)
    try:
        migrate(conn)
        build_pending(conn)
        with write_transaction(conn):
            if _views.search_index_exists(conn):
                _views.rebuild_search_index(conn)
            if _rollup.rollups_exist(conn):
                # Days before the oldest call keep their totals: their calls were pruned.
                (first,) = conn.execute("SELECT min(started_at) FROM calls").fetchone()
                _rollup.rebuild_rollups(conn, from_day=first[:10] if first else None)
            (n,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    finally:
        conn.close()
    return int(n)
