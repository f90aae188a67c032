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
    "STEP_ROWS",
    "clear_bodies",
    "delete_calls",
    "drop_bodies",
    "retention_step",
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


def clear_bodies(conn: sqlite3.Connection, before: str | None, limit: int) -> int:
    """Drop the bodies of up to ``limit`` calls that have some, oldest first (started
    before ``before``; ``None``: any), in the current transaction. Returns how many."""
    mark = _mark(conn)
    where = f"started_at >= ? AND {HAS_BODIES}" + (" AND started_at < ?" if before else "")
    params: list[object] = [mark, *([before] if before else [])]
    chosen = f"SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {int(limit)}"
    picked = conn.execute(f"SELECT max(started_at), count(*) FROM calls WHERE rowid IN ({chosen})", params)
    newest, count = picked.fetchone()
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


def delete_calls(conn: sqlite3.Connection, before: str | None, limit: int) -> int:
    """Delete up to ``limit`` calls, oldest first (started before ``before``; ``None``:
    any), in the current transaction, the rollups holding them first. Returns how many."""
    where = "started_at < ?" if before else "1"
    params: list[object] = [before] if before else []
    chosen = f"rowid IN (SELECT rowid FROM calls WHERE {where} ORDER BY started_at LIMIT {int(limit)})"
    if _rollup.rollups_exist(conn):
        _rollup.roll_up_new_rows(conn)  # a deleted call still counts in its day's totals
    if _views.search_index_exists(conn):
        _views.unindex(conn, chosen, params)
    return int(conn.execute(f"DELETE FROM calls WHERE {chosen}", params).rowcount)


def retention_step(
    conn: sqlite3.Connection, policy: Retention, now: datetime | None = None, limit: int = STEP_ROWS
) -> int:
    """One step of ``policy``, in the current transaction: at most ``limit`` calls deleted
    or cleared, the most urgent first. Returns how many (0: the log is within the policy)."""
    now = now or datetime.now(UTC)
    if policy.rows is not None:
        done = delete_calls(conn, stamp(now - timedelta(seconds=policy.rows)), limit)
        if done:
            return done
    if policy.bodies is not None:
        done = clear_bodies(conn, stamp(now - timedelta(seconds=policy.bodies)), limit)
        if done:
            return done
    if policy.size is not None and used_bytes(conn) > policy.size:
        return clear_bodies(conn, None, limit) or delete_calls(conn, None, limit)
    return 0
