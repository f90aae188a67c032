"""Keeping the call log within bounds: the steps behind ``HTTPTRACK_RETENTION`` (applied by
the writer, ``_sqlite.Store``) and ``httptrack prune --max-size`` (``_maintenance``).

Each step is one short write transaction that changes at most a few hundred calls, oldest
first, in this order: calls older than ``rows`` are deleted; the bodies (request, response,
generated text) of calls older than ``bodies`` are dropped, their figures kept; then, while
the log uses more than ``size`` bytes, the oldest bodies are dropped, and when no body is
left to drop, the oldest calls are deleted.

What a step removes leaves the full-text index with it. The daily rollups keep counting the
calls it deletes (they are rolled up first, if they were not yet): ``httptrack stats``,
the cost views and the dashboard still show what was spent on the days whose calls are
gone. "Uses" is the pages SQLite holds data in (``page_count - freelist_count``): a deleted
call's pages are reused by the next calls, so the file stops growing near ``size``; only
``VACUUM`` gives them back to the disk (``httptrack prune --vacuum``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .._settings import Retention
from . import _rollup, _views

__all__ = [
    "BODY_COLUMNS",
    "MERGE_PAGES",
    "STEP_ROWS",
    "SizeDebt",
    "clear_bodies",
    "compact_search_index",
    "delete_calls",
    "drop_bodies",
    "retention_step",
    "size_step",
    "stamp",
    "used_bytes",
]

#: What dropping a call's bodies clears: its content, not its figures.
BODY_COLUMNS = ("request_body", "response_body", "response_text")
#: Calls changed by one step of the writer's retention (one transaction of a few ms).
STEP_ROWS = 300
HAS_BODIES = "(" + " OR ".join(f"{c} IS NOT NULL" for c in BODY_COLUMNS) + ")"
#: Calls before this ``started_at`` have no bodies left (``httptrack_state``): where the
#: next search for bodies to drop starts, so no step reads the calls already cleared again.
_BODIES_MARK = "bodies_dropped_before"


def stamp(moment: datetime) -> str:
    """``moment`` in the ``started_at`` form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file that hold data (its free pages left out)."""
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int((pages - free) * page_size)


def _mark(conn: sqlite3.Connection) -> str:
    if not _rollup.rollups_exist(conn):  # the state table comes with the rollups
        return ""
    row = conn.execute(f"SELECT value FROM {_rollup.STATE_TABLE} WHERE key = ?", [_BODIES_MARK]).fetchone()
    return str(row[0]) if row else ""


def _set_mark(conn: sqlite3.Connection, value: str) -> None:
    if _rollup.rollups_exist(conn):
        conn.execute(
            f"INSERT OR REPLACE INTO {_rollup.STATE_TABLE} (key, value) VALUES (?, ?)", [_BODIES_MARK, value]
        )


class SizeDebt:
    """What the size bound still asks to free, in bytes, and whether the search index is
    being compacted.

    Measured once, then counted down by what each step frees (the stored lengths of what
    it drops), not measured again after each step: the search index forgets a call by
    adding a deletion record beside what it held, so the pages a step frees come back in
    full only once the index has merged those away. Measuring after every step would
    drop far more than needed. So: pay half the excess, compact the index a little per
    step (``merge``), measure again."""

    __slots__ = ("cleared", "compacting", "deleted", "left")

    def __init__(self) -> None:
        self.left = 0
        self.compacting = False
        #: Calls whose bodies the bound dropped, calls it deleted (so far).
        self.cleared = self.deleted = 0


#: Pages of the search index merged per step while it is compacted (FTS5 ``merge``).
MERGE_PAGES = 200
_LENGTHS = " + ".join(f"coalesce(length({c}), 0)" for c in BODY_COLUMNS)
#: What a call without its bodies takes, about (its figures, its index entries).
_CALL_BYTES = 400


def compact_search_index(conn: sqlite3.Connection, pages: int = MERGE_PAGES) -> bool:
    """Merge ``pages`` pages' worth of the search index's segments (deletion records go
    with them), in the current transaction. Returns whether there is more to merge."""
    if not _views.search_index_exists(conn):
        return False
    before = conn.total_changes
    fts = _views.FTS_TABLE
    conn.execute(f"INSERT INTO {fts}({fts}, rank) VALUES ('merge', ?)", [-pages])
    return conn.total_changes - before >= 2  # FTS5's own test for "nothing left to merge"


def clear_bodies(
    conn: sqlite3.Connection, before: str | None, limit: int, debt: SizeDebt | None = None
) -> int:
    """Drop the bodies of up to ``limit`` calls that have some, oldest first (started
    before ``before``; ``None``: any), in the current transaction. Returns how many;
    ``debt`` is counted down by their size."""
    mark = _mark(conn)
    where = f"started_at >= ? AND {HAS_BODIES}" + (" AND started_at < ?" if before else "")
    params: list[object] = [mark, *([before] if before else [])]
    chosen = f"SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {int(limit)}"
    picked = conn.execute(
        f"SELECT max(started_at), count(*), sum({_LENGTHS}) FROM calls WHERE rowid IN ({chosen})", params
    )
    newest, count, size = picked.fetchone()
    if debt is not None:
        debt.left -= size or 0
    if not count:
        if before and before > mark:
            _set_mark(conn, before)
        return 0
    done = drop_bodies(conn, f"rowid IN ({chosen})", params)
    # Calls that started at `newest` may be left (the limit fell among them): from there.
    _set_mark(conn, before if before and count < limit else newest)
    return int(done)


def drop_bodies(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    """Drop the bodies of the calls matching ``where``, in the current transaction, taking
    them out of the search index first. Returns how many.

    Not an ``UPDATE``: SQLite leaves a page that an update shrank where it is, mostly
    empty (new calls go to the end of the table, never into it), so the space would come
    back only with ``VACUUM``. The calls are deleted and written again without their
    bodies, under the same rowids (the search index and the rollups point at them): a
    deletion merges the emptied pages, which new calls then reuse."""
    if _views.search_index_exists(conn):
        _views.unindex(conn, where, list(params))
    columns = [f'"{row[1]}"' for row in conn.execute("PRAGMA table_info(calls)")]
    kept = ", ".join(f"NULL AS {c}" if c.strip('"') in BODY_COLUMNS else c for c in columns)
    table = "temp.httptrack_bodiless"
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} AS SELECT rowid AS rid, {kept} FROM calls WHERE {where}", params)
    try:
        conn.execute(f"DELETE FROM calls WHERE rowid IN (SELECT rid FROM {table})")
        names = ", ".join(columns)
        insert = f"INSERT INTO calls (rowid, {names}) SELECT rid, {names} FROM {table} ORDER BY rid"
        done = conn.execute(insert).rowcount
    finally:
        conn.execute(f"DROP TABLE {table}")
    return int(done)


def delete_calls(
    conn: sqlite3.Connection, before: str | None, limit: int, debt: SizeDebt | None = None
) -> int:
    """Delete up to ``limit`` calls, oldest first (started before ``before``; ``None``:
    any), in the current transaction, the rollups holding them first. Returns how many;
    ``debt`` is counted down by their size (about)."""
    where = "started_at < ?" if before else "1"
    params: list[object] = [before] if before else []
    chosen = f"rowid IN (SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {int(limit)})"
    if debt is not None:
        (size,) = conn.execute(
            f"SELECT sum({_LENGTHS} + {_CALL_BYTES}) FROM calls WHERE {chosen}", params
        ).fetchone()
        debt.left -= size or 0
    if _rollup.rollups_exist(conn):
        # A deleted call still counts in its day's totals: every rollup holds it first
        # (calls_rollup_combo, if it is still catching up, at least up to these calls).
        last = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM calls WHERE {chosen}", params)
        (through,) = last.fetchone()
        _rollup.roll_up_new_rows(conn, step=_rollup.COMBO_STEP, through=through)
    if _views.search_index_exists(conn):
        _views.unindex(conn, chosen, params)
    return int(conn.execute(f"DELETE FROM calls WHERE {chosen}", params).rowcount)


def size_step(conn: sqlite3.Connection, max_size: int, debt: SizeDebt, limit: int) -> int:
    """One step towards ``max_size``: drop the oldest bodies (or, none left, delete the
    oldest calls) while ``debt`` is owed; then compact the search index a little; then
    measure again. Returns how many calls were changed, or 1 for a step of compaction
    (0: within the bound)."""
    if debt.left <= 0 and debt.compacting:
        debt.compacting = compact_search_index(conn)
        if debt.compacting:
            return 1
    if debt.left <= 0:
        used = used_bytes(conn)
        if used <= max_size:
            return 0
        # Half the excess at a time: what the index gives back on top of the bodies (their
        # words) is known only once it is compacted; then measured again.
        debt.left = (used - max_size) // 2 + max_size // 100
    done = clear_bodies(conn, None, limit, debt)
    debt.cleared += done
    if not done:
        done = delete_calls(conn, None, limit, debt)
        debt.deleted += done
    if not done:
        debt.left = 0  # nothing left to prune
    elif debt.left <= 0:
        debt.compacting = True
    return done


def retention_step(
    conn: sqlite3.Connection,
    policy: Retention,
    now: datetime | None = None,
    limit: int | None = None,
    debt: SizeDebt | None = None,
) -> int:
    """One step of ``policy``, in the current transaction: at most ``limit`` calls
    (``STEP_ROWS``) deleted or cleared, the most urgent first. Returns how many (0: the
    log is within the policy). ``debt``: the size bound's state, kept between steps."""
    now = now or datetime.now(UTC)
    limit = STEP_ROWS if limit is None else limit
    if policy.rows is not None:
        done = delete_calls(conn, stamp(now - timedelta(seconds=policy.rows)), limit)
        if done:
            return done
    if policy.bodies is not None:
        done = clear_bodies(conn, stamp(now - timedelta(seconds=policy.bodies)), limit)
        if done:
            return done
    if policy.size is not None:
        return size_step(conn, policy.size, debt or SizeDebt(), limit)
    return 0
